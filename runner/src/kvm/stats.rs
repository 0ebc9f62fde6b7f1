//! KVM's binary statistics (api.rst 4.133, KVM_GET_STATS_FD): the named counters of a vCPU or VM,
//! read at any time without stopping it. Used to say what a vCPU that will not leave KVM_RUN is
//! doing: exits and page faults that keep coming without progress are KVM retrying, none at all
//! is a guest that runs on undisturbed.

use super::ioctl::ioctl_int;
use super::uapi::KVM_GET_STATS_FD;
use nix::errno::Errno;
use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

/// The header and descriptor layouts are fixed by the uAPI (struct kvm_stats_header, struct
/// kvm_stats_desc): six u32s; then u32 flags, s16 exponent, u16 size, u32 offset, u32 bucket_size,
/// and the name in `name_size` bytes.
const HEADER_SIZE: usize = 24;
const DESC_SIZE: usize = 16;

struct Desc {
    name: String,
    /// Where the first value lies, from the start of the data block.
    offset: u64,
}

/// An open statistics descriptor; its table of names is read only when the values are.
pub struct Stats {
    file: File,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Stats {
    /// Opens the statistics of the vCPU or VM behind `fd`. On a vCPU this takes the vCPU's lock:
    /// call it before KVM_RUN, not while another thread is in it.
    pub fn open(fd: RawFd) -> Result<Stats, Errno> {
        let stats_fd = ioctl_int(fd, KVM_GET_STATS_FD, 0)?;
        // SAFETY: the kernel just returned this new descriptor, owned by nothing else.
        Ok(Stats { file: unsafe { File::from_raw_fd(stats_fd) } })
    }

    fn descs(&self) -> Option<(Vec<Desc>, u64)> {
        let mut header = [0u8; HEADER_SIZE];
        self.file.read_exact_at(&mut header, 0).ok()?;
        let field = |i: usize| u32_at(&header, 4 * i).map(|v| v as usize);
        let (name_size, count, desc_offset, data_offset) = (field(1)?, field(2)?, field(4)?, field(5)?);
        let stride = DESC_SIZE + name_size;
        let mut table = vec![0u8; stride.checked_mul(count)?];
        self.file.read_exact_at(&mut table, desc_offset as u64).ok()?;
        let descs = table
            .chunks_exact(stride)
            .filter_map(|d| {
                let raw_name = &d[DESC_SIZE..];
                let end = raw_name.iter().position(|b| *b == 0).unwrap_or(raw_name.len());
                let name = String::from_utf8_lossy(&raw_name[..end]).into_owned();
                Some(Desc { name, offset: u64::from(u32_at(d, 8)?) })
            })
            .collect();
        Some((descs, data_offset as u64))
    }

    /// The first value of every statistic, by name (empty if they cannot be read).
    pub fn read(&self) -> Vec<(String, u64)> {
        let Some((descs, data_offset)) = self.descs() else { return Vec::new() };
        descs
            .into_iter()
            .filter_map(|d| {
                let mut v = [0u8; 8];
                self.file.read_exact_at(&mut v, data_offset + d.offset).ok()?;
                Some((d.name, u64::from_ne_bytes(v)))
            })
            .collect()
    }

    /// What changed between two reads of these statistics, largest first: `exits +1200`.
    pub fn grown(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<String> {
        let mut grown: Vec<(&str, u64)> = after
            .iter()
            .filter_map(|(name, v)| {
                let was = before.iter().find(|(n, _)| n == name).map_or(0, |(_, w)| *w);
                (*v > was).then(|| (name.as_str(), v - was))
            })
            .collect();
        grown.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        grown.iter().map(|(n, d)| format!("{n} +{d}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_named_largest_first_and_unchanged_ones_are_left_out() {
        let named = |list: &[(&str, u64)]| list.iter().map(|(n, v)| (n.to_string(), *v)).collect::<Vec<_>>();
        let before = named(&[("exits", 10), ("pf_taken", 5), ("halt_exits", 1)]);
        let after = named(&[("exits", 1210), ("pf_taken", 5), ("halt_exits", 3), ("new", 7)]);
        assert_eq!(Stats::grown(&before, &after), ["exits +1200", "new +7", "halt_exits +2"]);
    }
}
