"""Flower's Deployment Engine for the fleet: `edgetune fleet serve` (a SuperLink with TLS and
SuperNode authentication, then the run) and `edgetune fleet join` (a SuperNode driving one
board), docs/fleet.md §7.

- `certificates(dir)`: a CA and a server certificate for 127.0.0.1 / localhost (the
  `cryptography` package, generated locally, nothing fetched);
- `node_key(dir, name)`: a SuperNode's P-384 key pair in OpenSSH format (what
  `flower-supernode --auth-supernode-private-key` and `flwr supernode register` take);
- `superlink(...)`, `supernode(...)`: the processes (`flower-superlink --enable-supernode-auth`
  admits only registered keys; the SuperNode verifies the SuperLink's certificate with the CA);
- `register(...)`, `submit(...)`: `flwr supernode register` and `flwr run` of the app in
  fleet_app/ against the SuperLink, with a private FLWR_HOME holding the connection.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..device.process import stop_process

APP_DIR = Path(__file__).resolve().parent / "fleet_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


def certificates(d: str | os.PathLike) -> dict[str, str]:
    """ca.crt, server.pem, server.key in d (made once; reused when present)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    out = {"ca": str(d / "ca.crt"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}
    if all(os.path.exists(p) for p in out.values()):
        return out
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgetune fleet CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30)).add_extension(san, critical=False)
            .sign(ca_key, hashes.SHA256()))
    Path(out["ca"]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(out["cert"]).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(out["key"]).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return out


def node_key(d: str | os.PathLike, name: str) -> tuple[str, str]:
    """(private key path, public key path) of a SuperNode, made once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    priv, pub = d / name, d / f"{name}.pub"
    if not (priv.exists() and pub.exists()):
        k = ec.generate_private_key(ec.SECP384R1())
        priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                         serialization.NoEncryption()))
        os.chmod(priv, 0o600)
        pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                    serialization.PublicFormat.OpenSSH) + b"\n")
    return str(priv), str(pub)


def flwr_home(d: str | os.PathLike, port: int, ca: str) -> str:
    """A private FLWR_HOME whose config names the SuperLink `fleet` (TLS with our CA)."""
    home = Path(d) / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "fleet"\n\n[superlink.fleet]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{ca}"\n')
    return str(home)


def _env(home: str | None = None) -> dict:
    env = dict(os.environ)
    # Flower's processes start each other by name (the SuperLink runs `flower-superexec`): the
    # venv's bin must be on PATH even when only its python was called (make test, CI)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin] + [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin])
    if home:
        env["FLWR_HOME"] = home
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def superlink(d: str | os.PathLike, port: int, certs: dict, log: str) -> subprocess.Popen:
    cmd = [_bin("flower-superlink"), "--ssl-ca-certfile", certs["ca"], "--ssl-certfile", certs["cert"],
           "--ssl-keyfile", certs["key"], "--enable-supernode-auth", "--disable-runtime-dependency-installation",
           "--host", "127.0.0.1", "--port", str(port), "--database", str(Path(d) / "superlink.db")]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=_env(), cwd=d,
                            start_new_session=True)


def supernode(port: int, ca: str | None, key: str | None, node_config: str, runtime_port: int, log: str,
              cwd: str) -> subprocess.Popen:
    cmd = [_bin("flower-supernode"), "--superlink", f"127.0.0.1:{port}", "--node-config", node_config,
           "--port", str(runtime_port), "--max-retries", "3", "--max-wait-time", "20"]
    cmd += ["--root-certificates", ca] if ca else ["--insecure"]
    if key:
        cmd += ["--auth-supernode-private-key", key]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=_env(), cwd=cwd,
                            start_new_session=True)


def wait_port(port: int, timeout: float = 60) -> None:
    t = time.time() + timeout
    while time.time() < t:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def register(home: str, pub: str) -> subprocess.CompletedProcess:
    return subprocess.run([_bin("flwr"), "supernode", "register", pub, "fleet"], env=_env(home), capture_output=True,
                          text=True, timeout=120)


def submit(home: str, run_config: dict, cwd: str) -> subprocess.CompletedProcess:
    """`flwr run` of fleet_app/ (copied into cwd) with the run config, logs streamed until the end."""
    app = Path(cwd) / "fleet_app"
    if app.exists():
        shutil.rmtree(app)
    shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
    rc = " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())
    return subprocess.run([_bin("flwr"), "run", str(app), "fleet", "--run-config", rc, "--stream"], env=_env(home),
                          capture_output=True, text=True, timeout=3600, cwd=cwd)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def stop(p: subprocess.Popen) -> None:
    """Stop a SuperLink / SuperNode: SIGTERM, 10 s to shut down, then SIGKILL."""
    stop_process(p, grace=10)


# ------------------------------------------------------------------------------ CLI


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="start a SuperLink (TLS, only registered SuperNodes) and run the fleet")
    s.add_argument("--dir", default=os.path.join("build", "fleet-deploy"), help="certificates, keys, logs, results")
    s.add_argument("--port", type=int, default=9092)
    s.add_argument("--nodes", type=int, default=3,
                   help="SuperNodes to wait for; keys DIR/keys/node0..N-1 are made if missing, every DIR/keys/*.pub registered")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    s.add_argument("--lr", type=float, default=0.01)
    s.add_argument("--clip", type=float, default=8.0)
    s.add_argument("--topk", type=float, default=0.05)
    s.add_argument("--sigma", type=float, default=0.0)
    s.add_argument("--refit-l2", type=float, default=0.0,
                   help="> 0: one exact refit round first (every board sends m.refit_stats, the server solves with "
                        "this ridge strength), the SGD rounds from its state")
    s.add_argument("--refit-alpha", type=float, default=1.0, help="the refit's blend with the flashed classifier")
    s.add_argument("--refit-bits", type=int, default=0,
                   help="4..16: the boards send the refit statistics quantized to this many bits (12 measured); 0: exact")
    j = sub.add_parser("join", help="start a SuperNode that drives a unix-port board process")
    j.add_argument("--dir", default=os.path.join("build", "fleet-deploy"))
    j.add_argument("--port", type=int, default=9092, help="the SuperLink's port")
    j.add_argument("--partition", type=int, required=True, help="the client (subject, arm) this board holds")
    j.add_argument("--driver", default="unix", choices=("unix", "twin"))


def run_cli(a) -> int:
    if a.cmd == "serve":  # the ServerApp's own checks (server_app.py), before any process starts
        from .simulate import Settings

        Settings(model=os.path.abspath(a.model), rounds=a.rounds, lr=a.lr, clip=a.clip, topk=a.topk, sigma=a.sigma,
                 refit_l2=a.refit_l2, refit_alpha=a.refit_alpha, refit_bits=a.refit_bits, driver="unix").check()
    d = os.path.abspath(a.dir)
    os.makedirs(d, exist_ok=True)
    certs = certificates(os.path.join(d, "certs"))
    if a.cmd == "join":
        had = os.path.exists(os.path.join(d, "keys", f"node{a.partition}"))
        priv, pub = node_key(os.path.join(d, "keys"), f"node{a.partition}")
        if not had:
            print(f"new SuperNode key {pub}: the SuperLink refuses it until `edgetune fleet serve` (re)starts and "
                  "registers it; start serve first", file=sys.stderr)
        board = os.path.join(d, "boards", f"board{a.partition}")
        os.makedirs(board, exist_ok=True)
        p = supernode(a.port, certs["ca"], priv, f'partition-id={a.partition} driver="{a.driver}" board-dir="{board}"',
                      free_port(), os.path.join(d, f"supernode{a.partition}.log"), board)
        try:
            return p.wait()
        except KeyboardInterrupt:
            stop(p)
            return 130
    home = flwr_home(d, a.port, certs["ca"])
    link = superlink(d, a.port, certs, os.path.join(d, "superlink.log"))
    try:
        wait_port(a.port)
        for i in range(a.nodes):  # keys of the nodes to come (a remote node's .pub can be copied in too)
            node_key(os.path.join(d, "keys"), f"node{i}")
        keys = sorted(Path(d, "keys").glob("*.pub"))
        for k in keys:
            r = register(home, str(k))
            if r.returncode != 0:
                raise ValueError(f"flwr supernode register {k} failed: {r.stdout}{r.stderr}")
        print(f"SuperLink on 127.0.0.1:{a.port} (TLS), {len(keys)} SuperNode keys registered")
        r = submit(home, {"model": os.path.abspath(a.model), "rounds": a.rounds, "nodes": a.nodes, "lr": a.lr,
                          "clip": a.clip, "topk": a.topk, "sigma": a.sigma, "refit-l2": a.refit_l2,
                          "refit-alpha": a.refit_alpha, "refit-bits": a.refit_bits,
                          "out": os.path.join(d, "result.json")}, d)
        sys.stdout.write(r.stdout[-4000:])
        return r.returncode
    finally:
        stop(link)
