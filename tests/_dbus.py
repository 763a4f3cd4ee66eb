"""A private D-Bus message bus for the tests: Debian's dbus-daemon with a
generated configuration, listening on a Unix socket in a temporary folder,
and helpers that open Gio and dbus-fast connections to it."""
import os
import subprocess

from gi.repository import Gio

from glibloop import gio

CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """dbus-daemon in the foreground; .address once started, stopped on exit."""

    def __init__(self, folder):
        self.folder = folder
        self.process = None
        self.address = None

    def __enter__(self):
        config = self.folder / "bus.conf"
        config.write_text(CONFIG.format(socket=self.folder / "bus"))
        self.log = open(self.folder / "dbus-daemon.log", "w+")
        self.process = subprocess.Popen(
            ["dbus-daemon", "--config-file", str(config), "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True,
        )
        self.address = self.process.stdout.readline().strip()
        if not self.address:
            self.__exit__()
            raise RuntimeError(f"dbus-daemon did not start: {self.errors()}")
        return self

    def errors(self):
        self.log.seek(0)
        return self.log.read()

    def __exit__(self, *exc_info):
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()
        self.log.close()


BUS_FLAGS = (
    Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
    | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
)


async def gio_connection(address):
    """A Gio connection to the bus at address (close it with close_gio)."""
    return await gio.call(Gio.DBusConnection.new_for_address, address, BUS_FLAGS, None)


async def close_gio(connection):
    await gio.call(connection.close)


async def dbus_fast_bus(address):
    from dbus_fast.aio import MessageBus

    return await MessageBus(bus_address=address).connect()


async def close_dbus_fast(bus):
    bus.disconnect()
    await bus.wait_for_disconnect()
