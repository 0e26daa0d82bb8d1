//! Where the input's bytes live. A named file is reopened for every pass;
//! stdin (or any other one-shot reader) is first copied to a private
//! temporary file, so it too can be read twice (validation, then the run),
//! and that file is removed once the input and all its passes are dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The bytes of an input, readable from the start any number of times.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A file the user named.
    File(PathBuf),
    /// A spooled copy of a stream; shared by every pass that reads it.
    Spooled(Arc<Spool>),
}

impl Source {
    /// Opens the bytes for a fresh pass, at offset 0.
    pub(crate) fn open(&self) -> io::Result<File> {
        match self {
            Source::File(p) => File::open(p),
            Source::Spooled(s) => File::open(&s.path),
        }
    }
}

/// A temporary copy of a stream, deleted on drop.
#[derive(Debug)]
pub(crate) struct Spool {
    /// Where the copy lives (in the system's temporary directory).
    path: PathBuf,
}

/// Distinguishes spools made by one process.
static SPOOL_SEQ: AtomicU64 = AtomicU64::new(0);

impl Spool {
    /// Copies `r` to end of stream into a new temporary file readable only by
    /// the current user.
    pub(crate) fn copy_from(mut r: impl Read) -> io::Result<Spool> {
        let dir = std::env::temp_dir();
        let (mut file, path) = loop {
            let nanos =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let seq = SPOOL_SEQ.fetch_add(1, Ordering::Relaxed);
            let path =
                dir.join(format!("mdebulk-input-{}-{nanos}-{seq}.spool", std::process::id()));
            match create_private(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let spool = Spool { path };
        io::copy(&mut r, &mut file)?;
        Ok(spool)
    }

    /// Where the copy lives.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort: a leftover file in the temp directory is harmless.
        let _ = fs::remove_file(&self.path);
    }
}

/// Creates `path`, failing if it exists, with owner-only permissions where
/// the platform has them (the list of devices is sensitive).
fn create_private(path: &Path) -> io::Result<File> {
    crate::private::open(OpenOptions::new().write(true).create_new(true), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_reads_twice_and_disappears_when_dropped() {
        let spool = Arc::new(Spool::copy_from(&b"a,b\n1,2\n"[..]).unwrap());
        let path = spool.path().to_path_buf();
        let source = Source::Spooled(spool.clone());
        for _ in 0..2 {
            let mut s = String::new();
            source.open().unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "a,b\n1,2\n");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        drop(source);
        assert!(path.exists());
        drop(spool);
        assert!(!path.exists());
    }
}
