"""The lab: simulated appliances on this machine, an adapter beside the domain.

Everything that only exists because devices are simulated lives here: the
devices and their SSH servers (:mod:`fleet.lab.devices`, :mod:`fleet.lab.sshd`),
the reboot that runs the boot logic (:mod:`fleet.lab.reboot`), site links
(:mod:`fleet.lab.net`), the lab's MQTT broker and heartbeat daemons
(:mod:`fleet.lab.mqtt`) and the USB first boot and reset button
(:mod:`fleet.lab.usb`).

The domain never imports this package (``tests/test_layering.py``): the lab
tells it what it needs through data, as an operator would for real hardware
(the inventory it writes, the project's broker settings).
"""

from fleet.lab.devices import HOST, Lab, LabDevice, host_key_path, pid_is, write_host_key

__all__ = ["HOST", "Lab", "LabDevice", "host_key_path", "pid_is", "write_host_key"]
