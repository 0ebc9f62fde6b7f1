//! Inside the guest: the virtio-serial port QEMU named for the events
//! (/sys/class/virtio-ports/<dev>/name), opened for reading and writing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PORTS: &str = "/sys/class/virtio-ports";

/// Opens the port named `name`. The name arrives from QEMU over the virtio control queue, so it
/// may appear a moment after /init starts: wait for it up to `patience`.
pub fn open(name: &str, patience: Duration) -> Result<File, String> {
    let until = Instant::now() + patience;
    loop {
        if let Some(dev) = find(Path::new(PORTS), name) {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&dev)
                .map_err(|e| format!("cannot open the event port {}: {e}", dev.display()));
        }
        if Instant::now() >= until {
            let seen: Vec<String> = std::fs::read_dir(PORTS)
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            return Err(format!(
                "no virtio-serial port named {name} under {PORTS} after {patience:?} (ports: {}); \
                 does the kernel have CONFIG_VIRTIO_CONSOLE and CONFIG_VIRTIO_PCI?",
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = std::fs::read_to_string(e.path().join("name")).ok()?;
        (n.trim() == name).then(|| Path::new("/dev").join(e.file_name()))
    })
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn ports_are_found_by_name() {
        let dir = std::env::temp_dir().join(format!("gmemconf-ports-{}", std::process::id()));
        for (dev, name) in [("vport1p1", "other\n"), ("vport1p2", "org.gmemconf.events\n")] {
            std::fs::create_dir_all(dir.join(dev)).expect("mkdir");
            std::fs::write(dir.join(dev).join("name"), name).expect("write");
        }
        assert_eq!(find(&dir, "org.gmemconf.events"), Some("/dev/vport1p2".into()));
        assert_eq!(find(&dir, "nothing"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
