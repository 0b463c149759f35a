"""Helpers the tests, bench/ and fuzz/ share: `from tests.support import tinymodels`."""
