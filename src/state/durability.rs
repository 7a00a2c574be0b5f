//! What a replace-by-rename needs on a given filesystem to be atomic and durable with
//! one cache flush (see `super::dir::DirStore::save` for the write itself).
//!
//! * One `fsync` of the renamed file commits the rename too on ext4 (jbd2), XFS and
//!   btrfs: the rename changes the file's inode (its ctime), so the journal commit or
//!   log force that `fsync` waits for contains it, and the commit's cache flush covers
//!   the data written before. An NFS server commits a rename before it answers, and
//!   tmpfs has nothing to make durable. Elsewhere the directory is fsynced as well.
//! * The new file's data must reach the device before any commit can contain the
//!   rename — a commit another process's `fsync` may trigger between our `rename` and
//!   our `fsync` — or a power loss could leave the name pointing at an empty file
//!   (XFS updates a file's on-disk size only when its data is written). ext4 in its
//!   default mode orders this itself (`data=ordered` with `auto_da_alloc` flushes a
//!   file renamed over another before the commit); everywhere else, and on ext4
//!   mounted otherwise, the data is written out first with `sync_file_range`, which
//!   costs a wait for the data but no extra flush.

use nix::sys::statfs::{self, FsType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenameDurability {
    /// Write the data out (`sync_file_range`) before the rename.
    pub write_out_before_rename: bool,
    /// `fsync` the directory after the file.
    pub sync_dir_after_rename: bool,
}

/// The safe choice when nothing is known about the filesystem.
pub const UNKNOWN: RenameDurability = RenameDurability {
    write_out_before_rename: true,
    sync_dir_after_rename: true,
};

/// What a filesystem of `kind` needs; `ext4_orders_data` says whether an ext4 is mounted
/// in the mode that orders renamed data itself (see [`ext4_orders_renamed_data`]).
pub fn for_filesystem(kind: FsType, ext4_orders_data: impl FnOnce() -> bool) -> RenameDurability {
    let one_flush = |write_out_before_rename| RenameDurability {
        write_out_before_rename,
        sync_dir_after_rename: false,
    };
    if kind == statfs::EXT4_SUPER_MAGIC {
        one_flush(!ext4_orders_data())
    } else if kind == statfs::TMPFS_MAGIC {
        one_flush(false)
    } else if [
        statfs::XFS_SUPER_MAGIC,
        statfs::BTRFS_SUPER_MAGIC,
        statfs::NFS_SUPER_MAGIC,
    ]
    .contains(&kind)
    {
        one_flush(true)
    } else {
        UNKNOWN
    }
}

/// Whether the ext4 on device `major:minor` is mounted with `data=ordered` and
/// `auto_da_alloc` (the defaults), per the text of `/proc/self/mountinfo` (the options
/// after the `-` separator belong to the filesystem, whichever mount shows them).
/// Anything unexpected answers `false`, the safe side.
pub fn ext4_orders_renamed_data(mountinfo: &str, major: u64, minor: u64) -> bool {
    let device = format!("{major}:{minor}");
    let mut found = false;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(2) != Some(&device.as_str()) {
            continue;
        }
        let Some(separator) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        let (Some(&"ext4"), Some(options)) = (fields.get(separator + 1), fields.get(separator + 3))
        else {
            return false;
        };
        if options
            .split(',')
            .any(|option| option == "data=writeback" || option == "noauto_da_alloc")
        {
            return false;
        }
        found = true;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro
30 22 0:26 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=100k
31 22 254:16 / /srv/vm\\040state rw,relatime shared:6 - ext4 /dev/vdb rw,data=writeback
32 22 254:32 / /var/lib/swtpm rw shared:7 - ext4 /dev/vdc rw,noauto_da_alloc
33 22 254:48 / /var/lib/swtpm/vm1 rw shared:8 - ext4 /dev/vdd rw,data=journal
34 22 254:0 /home /home rw shared:9 - ext4 /dev/vda rw,errors=remount-ro
";

    #[test]
    fn the_filesystems_own_options_decide() {
        let orders = |major, minor| ext4_orders_renamed_data(MOUNTINFO, major, minor);
        assert!(orders(254, 0), "defaults, mounted twice");
        assert!(!orders(0, 26), "not ext4");
        assert!(!orders(254, 16), "data=writeback");
        assert!(!orders(254, 32), "noauto_da_alloc");
        assert!(orders(254, 48), "data=journal orders too");
        assert!(!orders(8, 1), "not mounted");
        assert!(!ext4_orders_renamed_data("garbage\n\n- -", 254, 0));
    }

    #[test]
    fn one_flush_where_the_rename_rides_with_the_fsync() {
        let ext4 = for_filesystem(statfs::EXT4_SUPER_MAGIC, || true);
        assert_eq!(
            (ext4.write_out_before_rename, ext4.sync_dir_after_rename),
            (false, false)
        );
        let xfs = for_filesystem(statfs::XFS_SUPER_MAGIC, || unreachable!());
        assert_eq!(
            (xfs.write_out_before_rename, xfs.sync_dir_after_rename),
            (true, false)
        );
        assert_eq!(for_filesystem(statfs::MSDOS_SUPER_MAGIC, || true), UNKNOWN);
    }
}
