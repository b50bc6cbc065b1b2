"""Applications on the device: the blob store, versions side by side, the deploy flow.

``blobs``: files by SHA-256 under ``var/lib/fleet/blobs/sha256/``, verified on arrival.
``release``: the small manifest a version is staged from (name, version, files).
``versions``: version directories made from blobs, the ``current`` symlink.
``flow``: one app's (state, event) table, persisted before acting.
``gate``: the video-aware health verdict read from the runtime's /health and /metrics.
``supervise``: the runtime run per application, restarted with backoff.
See docs/device-apps.md.
"""
