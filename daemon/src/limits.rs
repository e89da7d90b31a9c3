//! The process's resource limits. The soft file limit is raised to the hard limit at
//! start (systemd and most shells give 1024), and the corestore's budget of open cores is
//! fitted into what the limit leaves after peer and API connections.

use hyperd_config::Config;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors an open core holds (data, tree, signatures, locked bitfield).
pub const DESCRIPTORS_PER_CORE: u64 = 4;
/// Descriptors kept for everything but cores and peers: API clients, the listeners, the
/// log, the home lock, opening files briefly (state, key files), the runtime.
const RESERVED: u64 = 128;
/// The fewest cores kept open, whatever the limit says.
const MIN_OPEN_CORES: usize = 16;

/// The file limit after [`raise_file_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The soft limit before, if it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft limit on open files to the hard limit.
pub fn raise_file_limit() -> nix::Result<FileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(FileLimit {
            soft,
            raised_from: None,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(FileLimit {
        soft: hard,
        raised_from: Some(soft),
    })
}

/// How many cores may be open at once under a file limit of `limit`: the configured
/// number, or fewer if they would take more than half of the limit less the reserve, or
/// more than what peer connections (incoming and dialed) and the reserve leave. Half,
/// because sockets come and go faster than cores close, and cores being opened or closed
/// briefly hold more: a daemon under the usual limit of 1024 keeps its open cores within
/// 384 descriptors and stays under 512 in all.
pub fn open_core_budget(limit: u64, config: &Config) -> usize {
    let peers = (config.max_peers + config.max_outbound_peers) as u64;
    let room = limit
        .saturating_sub(peers + RESERVED)
        .min((limit / 2).saturating_sub(RESERVED))
        / DESCRIPTORS_PER_CORE;
    (config.max_open_cores as u64)
        .min(room)
        .max(MIN_OPEN_CORES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_fits_the_limit() {
        let config = Config::default();
        // 1024 / 2 - 128 = 384 descriptors (less than the 576 peers leave): 96 cores.
        assert_eq!(open_core_budget(1024, &config), 96);
        // 512 - (256 + 64 peers) - 128 = 64 descriptors: 16 cores.
        assert_eq!(open_core_budget(512, &config), 16);
        assert_eq!(open_core_budget(1 << 20, &config), config.max_open_cores);
        assert_eq!(open_core_budget(100, &config), MIN_OPEN_CORES);
    }
}
