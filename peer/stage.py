"""Staging a release on this host: download from the swarm, verify, unpack. Nothing goes live.

Each step is reported. Staging is safe to repeat: an already staged release is reported as such,
and an interrupted download resumes from what libtorrent already has on disk.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from common import messages as m
from common.archive import file_digest
from common.errors import ShoalError
from common.release import Manifest
from common.torrent import torrent_infohash
from peer.context import PeerContext
from peer.verify import download_streamed


def _addresses(pairs: list[list[Any]]) -> list[tuple[str, int]]:
    return [(str(p[0]), int(p[1])) for p in pairs]


def refresh(ctx: PeerContext, cmd: m.Stage) -> None:
    """A repeated Stage for a download under way: take its (possibly new) addresses, e.g. the
    slice seeds of a seeder that restarted mid-download."""
    infohash = cmd.manifest.get("infohash")
    if isinstance(infohash, str):
        ctx.torrents.update_sources(infohash, _addresses(cmd.peers), _addresses(cmd.slice_seeds))


async def stage(ctx: PeerContext, cmd: m.Stage) -> None:
    rollout_id = cmd.rollout_id
    report = ctx.reporter.step
    try:
        manifest = Manifest.from_dict(cmd.manifest)
    except ShoalError as exc:
        report(rollout_id, "stage", "failed", result="error", detail=str(exc))
        return
    rid = manifest.release_id
    if ctx.journal.release(rid) is not None and ctx.layout.release_dir(rid).is_dir():
        ctx.torrents.seed(cmd.torrent, ctx.layout.download_dir(rid))
        report(rollout_id, "stage", "succeeded", result="succeeded", detail=f"{rid} already staged")
        return
    report(rollout_id, "stage", "running", detail=rid)
    step = "download"
    try:
        if torrent_infohash(cmd.torrent) != manifest.infohash:
            raise ShoalError("the torrent does not match the release manifest's infohash")
        report(rollout_id, step, "running")
        started = time.monotonic()
        peers = _addresses(cmd.peers)
        piece_slice = (cmd.slice[0], cmd.slice[1]) if len(cmd.slice) == 2 else None
        seeds = _addresses(cmd.slice_seeds)

        def downloaded(sources: dict[str, int]) -> None:  # verify and unpack may trail a bit
            took = time.monotonic() - started
            detail = (
                f"{manifest.size} bytes in {took:.2f}s, {len(sources)} peer(s) connected at the end"
            )
            report(rollout_id, "download", "succeeded", result="succeeded", detail=detail)

        streamed = await download_streamed(
            ctx.torrents,
            cmd.torrent,
            ctx.layout.download_dir(rid) / manifest.archive,
            ctx.layout.release_dir(rid),
            manifest.digest,
            downloaded,
            peers=peers,
            piece_slice=piece_slice,
            slice_seeds=seeds,
        )

        step = "verify"
        report(rollout_id, step, "running")
        archive = ctx.layout.download_dir(rid) / manifest.archive
        digest = streamed.digest or await trio.to_thread.run_sync(file_digest, archive)
        if digest != manifest.digest:
            raise ShoalError(f"digest mismatch: got {digest}, manifest says {manifest.digest}")
        report(rollout_id, step, "succeeded", result="succeeded", detail=digest)

        step = "unpack"
        report(rollout_id, step, "running")
        await trio.to_thread.run_sync(streamed.unpack, archive, ctx.layout.release_dir(rid))
        ctx.journal.add_release(manifest.to_dict(), cmd.torrent, time.time())
        report(
            rollout_id,
            step,
            "succeeded",
            result="succeeded",
            detail=str(ctx.layout.release_dir(rid)),
        )
    except ShoalError as exc:
        report(rollout_id, step, "failed", result="error", detail=str(exc))
        report(rollout_id, "stage", "failed", result="error", detail=f"{step}: {exc}")
        return
    report(rollout_id, "stage", "succeeded", result="succeeded", detail=f"{rid} staged")
