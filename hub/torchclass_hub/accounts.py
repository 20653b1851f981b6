"""Accounts: generated passwords (stored as scrypt hashes) and the Unix users behind them.

A new roster entry gets a random password on the next `up`; existing accounts keep theirs. The
plain password is written once, to a file only the (first) instructor can read; the hub itself
keeps only hashes, in a root-only file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import secrets
import subprocess
from pathlib import Path

from torchclass_classroom import Classroom

# scrypt cost: ~50 ms per login on one core, a million times that for a guesser.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                         p=int(p), dklen=32)
    return hmac.compare_digest(got, base64.b64decode(digest))


def read_hashes(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Write a file that only its owner can read, never briefly readable by others."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if owner and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    os.replace(tmp, path)


def ensure_passwords(classroom: Classroom) -> list[str]:
    """Give every roster user without a password one; return the names that got one now."""
    classroom.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(classroom.state_dir, 0o700)
    hashes = read_hashes(classroom.password_hashes)
    new = {u: secrets.token_urlsafe(12) for u in classroom.users if u not in hashes}
    if not new:
        return []
    for user, password in new.items():
        hashes[user] = hash_password(password)
    lines = ""
    if classroom.password_file.exists():
        lines = classroom.password_file.read_text()
    else:
        lines = ("# torchclass initial passwords: hand each person theirs, then delete this file.\n"
                 "# The hub stores only hashes; lost passwords are reset with\n"
                 "#   torchclass-hub reset-password USER\n")
    lines += "".join(f"{u} {p}\n" for u, p in new.items())
    owner = classroom.instructors[0] if classroom.real_unix_users else None
    _write_private(classroom.password_file, lines, owner)
    _write_private(classroom.password_hashes, json.dumps(hashes, indent=1))
    return list(new)


def reset_password(classroom: Classroom, user: str) -> str:
    if user not in classroom.users:
        raise KeyError(f"{user} is not in the roster of {classroom.source}")
    hashes = read_hashes(classroom.password_hashes)
    password = secrets.token_urlsafe(12)
    hashes[user] = hash_password(password)
    _write_private(classroom.password_hashes, json.dumps(hashes, indent=1))
    return password


def unix_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ensure_unix_user(name: str, home: Path | None = None, system: bool = False) -> pwd.struct_passwd:
    """Create a locked-password Unix account whose home only it can read."""
    if not unix_user_exists(name):
        cmd = ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "!"]
        if system:
            cmd.append("--system")
        if home:
            cmd += ["--home-dir", str(home)]
        subprocess.run([*cmd, name], check=True, capture_output=True, text=True)
    pw = pwd.getpwnam(name)
    home_path = Path(pw.pw_dir)
    home_path.mkdir(parents=True, exist_ok=True)
    # Debian's useradd makes 0755 homes: students could read each other's work.
    os.chown(home_path, pw.pw_uid, pw.pw_gid)
    os.chmod(home_path, 0o700)
    return pw


def ensure_unix_users(classroom: Classroom) -> None:
    if not classroom.real_unix_users:
        return
    for user in classroom.users:
        ensure_unix_user(user)

