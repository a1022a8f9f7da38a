"""``dlsec protect``: encrypt, sign, verify and rewrap model files. Exit 0 ok, 1 verification failed, 2 error."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dlsec.errors import InputError

_KEY_HELP = {
    "key_file": "key-encryption key file from 'dlsec protect keygen --kek' (repeatable)",
    "key_env": "environment variable holding a key (base64 of 32 bytes)",
    "passphrase_env": "environment variable holding a passphrase (Argon2id)",
    "passphrase_file": "file whose first line is a passphrase (Argon2id)",
    "ask_passphrase": "prompt for a passphrase",
    "key_service": "a registered key service plug-in (KMS, HSM)",
}


def _key_options(prefix: str = "") -> Callable[[Any], Any]:
    """The key-source options, ``--key-file`` etc., or ``--new-key-file`` etc. with ``prefix='new-'``."""
    dest = prefix.replace("-", "_")

    def deco(f: Any) -> Any:
        opts = [
            click.option(f"--{prefix}key-file", f"{dest}key_file", multiple=True, type=click.Path(dir_okay=False), help=_KEY_HELP["key_file"]),
            click.option(f"--{prefix}key-env", f"{dest}key_env", help=_KEY_HELP["key_env"]),
            click.option(f"--{prefix}passphrase-env", f"{dest}passphrase_env", help=_KEY_HELP["passphrase_env"]),
            click.option(f"--{prefix}passphrase-file", f"{dest}passphrase_file", type=click.Path(dir_okay=False), help=_KEY_HELP["passphrase_file"]),
            click.option(f"--{prefix}ask-passphrase", f"{dest}ask_passphrase", is_flag=True, help=_KEY_HELP["ask_passphrase"]),
            click.option(f"--{prefix}key-service", f"{dest}key_service", help=_KEY_HELP["key_service"]),
        ]  # fmt: skip
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def _sources(kw: dict[str, Any], prefix: str = "", *, confirm: bool = False) -> list[Any]:
    """Key sources from the options (popped from ``kw``); the passphrase is never taken from the command line."""
    from dlsec.protect import EnvKey, KeyFile, Passphrase, key_service

    d = prefix.replace("-", "_")
    out: list[Any] = [KeyFile(p) for p in kw.pop(f"{d}key_file") or ()]
    if name := kw.pop(f"{d}key_env"):
        out.append(EnvKey(name))
    phrases: list[str] = []
    if name := kw.pop(f"{d}passphrase_env"):
        if not os.environ.get(name):
            raise InputError(f"environment variable {name} is not set")
        phrases.append(os.environ[name])
    if path := kw.pop(f"{d}passphrase_file"):
        from dlsec.protect.keys import read_small

        try:
            text = read_small(path, "passphrase file", 4096).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"passphrase file {path} is not UTF-8 text") from None
        phrases.append(text.splitlines()[0] if text else "")
    if kw.pop(f"{d}ask_passphrase"):
        label = "New passphrase" if prefix else "Passphrase"
        phrases.append(click.prompt(label, hide_input=True, confirmation_prompt=confirm))
    out += [Passphrase(p.encode()) for p in phrases]
    if name := kw.pop(f"{d}key_service"):
        out.append(key_service(name))
    return out


def _need(sources: list[Any], what: str) -> list[Any]:
    if not sources:
        raise InputError(f"{what}: give --key-file, --key-env, --passphrase-env, --passphrase-file, --ask-passphrase or --key-service")
    return sources


@click.group()
def protect() -> None:
    """Protected model files: encrypt (AES-256-GCM), sign (Ed25519 / ECDSA), verify, rewrap."""


@protect.command("keygen")
@click.option("--kek", "kek_out", type=click.Path(dir_okay=False), help="write a new key-encryption key here (mode 0600)")
@click.option("--signing", "sign_out", type=click.Path(dir_okay=False), help="write a new signing key here (PEM, mode 0600) and its public key to FILE.pub")
@click.option("--type", "kind", type=click.Choice(["ed25519", "ecdsa-p256"]), default="ed25519", show_default=True, help="signing key type (ecdsa-p256: verifiable by OpenSSF model-signing too)")
def keygen_cmd(kek_out: str | None, sign_out: str | None, kind: str) -> None:
    """Make a key-encryption key and/or a signing key pair."""
    from dlsec.protect import generate_signing_key, write_key_file, write_signing_key

    if not kek_out and not sign_out:
        raise InputError("keygen: give --kek FILE and/or --signing FILE")
    if kek_out:
        key = write_key_file(kek_out)
        click.echo(f"key-encryption key {key.id} written to {kek_out} (keep it secret)")
    if sign_out:
        pub = write_signing_key(generate_signing_key(kind), sign_out)
        click.echo(f"{kind} signing key written to {sign_out} (keep it secret), public key to {pub}")


@protect.command("encrypt")
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="the encrypted file")
@_key_options()
@click.option("--sign-key", type=click.Path(dir_okay=False), help="also sign the encrypted file with this private key")
@click.option("--signature", type=click.Path(dir_okay=False), help="signature path (default OUT.sig)")
@click.option("--chunk-kib", type=click.IntRange(1, 65536), default=1024, show_default=True, help="plaintext per chunk")
def encrypt_cmd(src: str, out: str, sign_key: str | None, signature: str | None, chunk_kib: int, **kw: Any) -> None:
    """Encrypt a model file under a fresh data key wrapped by the given key(s); optionally sign the result."""
    from dlsec.protect import encrypt_file, load_private_key

    sources = _need(_sources(kw, confirm=True), "encrypt needs a key")
    private = load_private_key(sign_key) if sign_key else None
    header, sig = encrypt_file(src, out, sources, sign_key=private, signature=signature, chunk_size=chunk_kib << 10)
    click.echo(f"encrypted {src} -> {out}: {header.size} bytes in {header.chunks} chunks, format {header.meta['format']}, keys {', '.join(header.key_ids())}")
    if sig:
        click.echo(f"signed: {sig}")


def _verify(path: str, verify_key: str, signature: str | None) -> str:
    from dlsec.protect import load_public_key, verify

    v = verify(path, load_public_key(verify_key), signature)
    return f"signature ok: {v.files} file(s), key {v.key_hint[:16]}"


@protect.command("decrypt")
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="the decrypted file (mode 0600)")
@_key_options()
@click.option("--verify-key", type=click.Path(dir_okay=False), help="public key: the signature is checked before decryption")
@click.option("--signature", type=click.Path(dir_okay=False), help="signature path (default SRC.sig)")
@click.option("--no-verify", is_flag=True, help="decrypt an unsigned file (integrity still comes from AES-GCM)")
def decrypt_cmd(src: str, out: str, verify_key: str | None, signature: str | None, no_verify: bool, **kw: Any) -> None:
    """Check the signature, then decrypt; the output appears only if every chunk authenticates and the bytes read
    are the bytes signed (one read: nothing swapped in after the check is decrypted)."""
    from dlsec.protect import decrypt_file, load_public_key
    from dlsec.protect.signing import signed_file_digest

    digest = None
    if verify_key:
        digest = signed_file_digest(src, load_public_key(verify_key), signature)
    elif not no_verify:
        raise InputError("decrypt: give --verify-key PUB (or --no-verify for an unsigned file)")
    sources = _need(_sources(kw), "decrypt needs a key")
    header = decrypt_file(src, out, sources, expect_sha256=digest)
    if digest:
        click.echo(f"signature ok: {src} is the file signed")
    click.echo(f"decrypted {src} -> {out}: {header.size} bytes, all {header.chunks} chunks authenticated")


@protect.command("sign")
@click.argument("path", type=click.Path())
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="private key (PEM)")
@click.option("--signature", type=click.Path(dir_okay=False), help="signature path (default PATH.sig)")
@click.option("--no-tensors", is_flag=True, help="skip per-tensor digests of safetensors files")
def sign_cmd(path: str, key_path: str, signature: str | None, no_tensors: bool) -> None:
    """Sign a model file or folder (OpenSSF model-signing bundle; per-tensor digests for safetensors)."""
    from dlsec.protect import load_private_key, sign

    out = sign(path, load_private_key(key_path), signature, tensors=not no_tensors)
    click.echo(f"signed {path}: {out}")


@protect.command("verify")
@click.argument("path", type=click.Path())
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="public key (PEM)")
@click.option("--signature", type=click.Path(dir_okay=False), help="signature path (default PATH.sig)")
def verify_cmd(path: str, key_path: str, signature: str | None) -> None:
    """Check a file or folder against its signature: exit 0 ok, 1 failed (the message names the check)."""
    if not os.path.exists(path):
        raise InputError(f"{path} not found")
    click.echo(_verify(path, key_path, signature))


@protect.command("rewrap")
@click.argument("path", type=click.Path(dir_okay=False))
@_key_options()
@_key_options("new-")
@click.option("--keep-old", is_flag=True, help="add the new key(s) and keep the old wraps")
@click.option("--sign-key", type=click.Path(dir_okay=False), help="re-sign the file (its header changes); needs --verify-key")
@click.option("--verify-key", type=click.Path(dir_okay=False), help="public key: the file must match its signature before it is rewrapped")
@click.option("--signature", type=click.Path(dir_okay=False), help="signature path (default PATH.sig)")
def rewrap_cmd(path: str, keep_old: bool, sign_key: str | None, verify_key: str | None, signature: str | None, **kw: Any) -> None:
    """Change the key(s) a file is wrapped for, in place, without re-encrypting its data."""
    from dlsec.protect import load_private_key, load_public_key, rewrap_file, sign
    from dlsec.protect.signing import signed_file_digest

    old = _need(_sources(kw), "rewrap needs the current key")
    new = _sources(kw, "new-", confirm=True)
    if not new:
        raise InputError("rewrap needs a new key: --new-key-file, --new-key-env, --new-passphrase-env, ...")
    if sign_key and not verify_key:
        raise InputError("rewrap --sign-key re-signs the file: give --verify-key so its current signature is checked first")
    private = load_private_key(sign_key) if sign_key else None
    digest = signed_file_digest(path, load_public_key(verify_key), signature) if verify_key else None
    header = rewrap_file(path, old, new, keep=keep_old, expect_sha256=digest)
    click.echo(f"rewrapped {path}: keys {', '.join(header.key_ids())}; {header.chunks} chunks untouched")
    if private is not None:
        click.echo(f"signed: {sign(path, private, signature)}")
    elif Path(signature or f"{path}.sig").exists():
        click.echo(f"note: the header changed, so {signature or path + '.sig'} no longer matches: re-sign with --sign-key")
