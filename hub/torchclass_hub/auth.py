"""Login: the roster's own passwords by default, or an institution's OAuth/OIDC or LTI 1.3.

Whichever authenticator is chosen, the roster decides who may log in (allowed_users) and who is
an instructor (admin_users); secrets come from environment variables or files, never the YAML.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jupyterhub.auth import Authenticator
from torchclass_classroom import Classroom, ConfigError
from traitlets import Unicode

from .accounts import check_password, read_hashes


class RosterAuthenticator(Authenticator):
    """Checks a username/password against the scrypt hashes torchclass-hub wrote."""

    password_hashes = Unicode(help="JSON file of username -> scrypt hash").tag(config=True)

    async def authenticate(self, handler, data):
        user = (data or {}).get("username", "").strip()
        password = (data or {}).get("password", "")
        # Re-read each time: `up` and reset-password change the file while the hub runs.
        stored = read_hashes(Path(self.password_hashes)).get(user)
        # scrypt costs ~50 ms of CPU by design; in a thread (it releases the GIL) the hub's
        # event loop keeps serving the rest of the class while one student logs in.
        if stored and await asyncio.to_thread(check_password, password, stored):
            return user
        self.log.warning("Failed login for %r", user)
        return None


def _secret(spec: dict, file_key: str, env_key: str, what: str, source) -> str:
    if spec.get(file_key):
        return Path(spec[file_key]).read_text().strip()
    value = os.environ.get(spec.get(env_key) or "")
    if not value:
        raise ConfigError(f"{source}: {what} needs a secret: set the environment variable "
                          f"{spec.get(env_key)} or key '{file_key}'. Fix: never put it in the YAML.")
    return value


def configure(c, classroom: Classroom) -> None:
    auth = classroom["auth"]
    kind = auth["type"]
    if kind == "local":
        c.JupyterHub.authenticator_class = RosterAuthenticator
        c.RosterAuthenticator.password_hashes = str(classroom.password_hashes)
    elif kind == "oauth":
        from oauthenticator.generic import GenericOAuthenticator

        o = auth["oauth"]
        c.JupyterHub.authenticator_class = GenericOAuthenticator
        g = c.GenericOAuthenticator
        g.authorize_url, g.token_url, g.userdata_url = (
            o["authorize_url"], o["token_url"], o["userdata_url"])
        g.client_id = o["client_id"]
        g.client_secret = _secret(o, "client_secret_file", "client_secret_env",
                                  "auth.oauth", classroom.source)
        # The name decides who is an instructor: it must come from a claim the user cannot
        # change at the provider (preferred_username can be edited at many).
        g.username_claim = o.get("username_claim", "sub")
        g.scope = o.get("scope", ["openid", "profile", "email"])
        g.login_service = o.get("login_service", "your institution")
        g.oauth_callback_url = f"{classroom.url}hub/oauth_callback"
    elif kind == "lti13":
        from ltiauthenticator.lti13.auth import LTI13Authenticator

        lti = auth["lti13"]
        c.JupyterHub.authenticator_class = LTI13Authenticator
        a = c.LTI13Authenticator
        a.issuer = lti["issuer"]
        a.authorize_url = lti["authorize_url"]
        a.jwks_endpoint = lti["jwks_endpoint"]
        a.client_id = [lti["client_id"]]
        a.username_key = lti.get("username_key", "email")
    c.Authenticator.allowed_users = set(classroom.users)
    c.Authenticator.admin_users = set(classroom.instructors)
