"""USB provisioning, controller side: build and sign archives, record them, write drives.

* :mod:`fleet.provisioning.archive`: device specs, building (certificate, host key
  pinned before the device exists), verification, reuse of an archive built earlier;
* :mod:`fleet.provisioning.records`: the registry's provisioning status of each device;
* :mod:`fleet.provisioning.drive`: the USB drive itself (write, read back, wipe).

The lab's own first boot and reset button, which play the device's part, are in
:mod:`fleet.lab.usb`. The names below are the package's API, imported from here.

>>> ca = pki.load_ca(project, passphrase)                                  # doctest: +SKIP
>>> report = build_archives(project, ca, specs, BuildSettings(out_dir))    # doctest: +SKIP
>>> write_to_drive(report.built[0].path, Path("/media/usb"))               # doctest: +SKIP
"""

from fleet.provisioning.archive import (
    BuildReport,
    BuildSettings,
    BuiltArchive,
    DeviceSpec,
    build_archives,
    check_name,
    check_specs,
    parse_duration,
    reusable_archive,
    verify_file,
)
from fleet.provisioning.drive import (
    DriveError,
    DriveWrite,
    check_drive,
    drive_files,
    wipe_drive,
    write_to_drive,
)
from fleet.provisioning.records import (
    AWAITING_PROVISIONING,
    PROVISIONED,
    mark_provisioned,
    mark_reset,
    ssh_fingerprint,
)

__all__ = [
    "AWAITING_PROVISIONING", "PROVISIONED", "BuildReport", "BuildSettings", "BuiltArchive",
    "DeviceSpec", "DriveError", "DriveWrite", "build_archives", "check_drive", "check_name",
    "check_specs", "drive_files", "mark_provisioned", "mark_reset", "parse_duration",
    "reusable_archive", "ssh_fingerprint", "verify_file", "wipe_drive", "write_to_drive",
]
