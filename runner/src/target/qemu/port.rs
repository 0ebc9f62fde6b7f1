//! Inside the guest: the event channel, the second serial port (QEMU's second `-serial`, the
//! guest's ttyS1), opened for reading and writing and made a raw byte pipe.
//!
//! A serial port rather than virtio-serial: it needs no PCI device, so the guest kernel routes no
//! PCI interrupt through ACPI (0.5 s and more of every boot under TCG) and any kernel with the
//! 8250 driver, which a serial console needs anyway, can be booted.

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{ControlFlags, SetArg, cfmakeraw, tcgetattr, tcsetattr};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;

/// Opens `dev` without waiting for a carrier, then makes it raw: no echo (the host's plan would
/// come back as events), no line editing, no newline translation, no flow control.
pub fn open(dev: &str) -> Result<File, String> {
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(dev)
        .map_err(|e| {
            format!(
                "cannot open the event port {dev}: {e}; does the kernel have CONFIG_SERIAL_8250 with 2 or more ports?"
            )
        })?;
    let fail = |what: &str, e: nix::Error| format!("the event port {dev}: {what}: {e}");
    let mut t = tcgetattr(&port).map_err(|e| fail("tcgetattr", e))?;
    cfmakeraw(&mut t);
    t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD;
    t.control_flags &= !(ControlFlags::CRTSCTS | ControlFlags::HUPCL);
    tcsetattr(&port, SetArg::TCSANOW, &t).map_err(|e| fail("tcsetattr", e))?;
    fcntl(&port, FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| fail("clearing O_NONBLOCK", e))?;
    Ok(port)
}
