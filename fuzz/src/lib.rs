//! What the fuzz targets share.

use std::path::PathBuf;

/// Where targets that must hand the code a file write it: the directory
/// `run.sh` makes for the run and removes after it
/// (`CALLGUARD_FUZZ_SCRATCH`), or, for a target run by hand, memory-backed
/// `/dev/shm` where there is one.
pub fn scratch_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CALLGUARD_FUZZ_SCRATCH") {
        return dir.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}
