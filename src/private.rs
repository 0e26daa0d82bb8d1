//! Files the runner writes for itself — results, their `.partial`, the
//! journal, undo results, the stdin spool — created readable and writable
//! by their owner only. They list the devices of an incident and what was
//! done to them, which other users of the machine have no business reading.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Opens `path` with `options`; a file it creates is owner-only (0600 on
/// Unix, whatever the umask). An existing file that others may read (one
/// left by an earlier version, or by a resumed run) is narrowed to 0600 as
/// well: these files are the runner's own, nobody relies on sharing them,
/// and a resume is exactly when an old readable one would live on.
///
/// Elsewhere than Unix the file is opened as is: a file created in the
/// user's profile, where results normally go, inherits the profile's ACL
/// (the user, SYSTEM and Administrators only), and there is no mode to set.
pub fn open(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0
            && let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600))
        {
            // Best effort: a file another user owns cannot be narrowed by
            // us, and refusing to write it would help no one.
            tracing::warn!(
                "{}: cannot make the file private (mode {:o}): {e}",
                path.display(),
                mode & 0o777
            );
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        options.open(path)
    }
}

/// Creates `path` (or truncates it) for writing, owner-only ([`open`]).
pub fn create(path: &Path) -> io::Result<File> {
    open(OpenOptions::new().write(true).create(true).truncate(true), path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_are_owner_only_and_old_ones_are_narrowed() {
        let tmp = tempfile::Builder::new().prefix("mdebulk-private-").tempdir().unwrap();
        let dir = tmp.path();
        let fresh = dir.join("fresh");
        create(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let old = dir.join("old");
        std::fs::write(&old, b"kept").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut append = OpenOptions::new();
        append.read(true).append(true).create(true);
        open(&mut append, &old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"kept", "appending keeps the content");
        tmp.close().unwrap();
    }
}
