"""The controller's wiring, without a network: what `Controller.__init__` builds
(controller/parts.py)."""

from __future__ import annotations

from pathlib import Path

from controller.config import ControllerConfig
from controller.daemon import Controller
from protocol.api import VERBS


def test_the_controller_serves_every_verb_of_the_table(tmp_path: Path) -> None:
    controller = Controller(ControllerConfig(tenants=["acme"], data_dir=str(tmp_path)))
    assert sorted(controller.parts.api._routes) == sorted(VERBS)


def test_the_cli_and_the_daemons_expand_home_in_credential_paths_alike() -> None:
    from common.natsconn import NatsSettings, connect_options

    options = connect_options(NatsSettings(credentials="~/h.creds", nkey_seed="~/seed"))
    assert options["user_credentials"] == str(Path.home() / "h.creds")
    assert options["nkeys_seed"] == str(Path.home() / "seed")
