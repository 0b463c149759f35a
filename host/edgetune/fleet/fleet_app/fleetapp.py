"""The Flower app `edgetune fleet serve` submits: the fleet's ServerApp and ClientApp, which
live in the installed edgetune package (edgetune.fleet.server_app / edgetune.fleet.client)."""

from edgetune.fleet import client as _client
from edgetune.fleet import server_app as _server_app

client_app = _client.app
server_app = _server_app.deployment_app()
