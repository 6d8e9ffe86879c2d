//! Where latchkey keeps things on a machine, shared by the server (which
//! writes them) and the clients (which read the admin token for zero-config
//! local use).

use std::path::PathBuf;

/// The default address of a local server.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// Name of the admin token file in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Name of the generated master key file in the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

/// `$XDG_DATA_HOME/latchkey`, else `$HOME/.local/share/latchkey`; `None`
/// when neither variable is set.
pub fn default_data_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    non_empty("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .map(|base| base.join("latchkey"))
}
