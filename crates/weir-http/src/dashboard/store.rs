//! What the dashboard keeps between requests ([`Dashboard`], in the HTTP front
//! end's state): its logins and the Overview's shared live figures. A leaf of the
//! dashboard, so the front end's state does not import its pages.

use super::figures::Live;
use super::sessions::Sessions;

/// What the dashboard keeps: its logins and the live figures shared by every
/// open page.
pub(crate) struct Dashboard {
    pub(crate) sessions: Sessions,
    pub(crate) live: Live,
}

impl Dashboard {
    /// Nothing kept yet; sessions as `config` says.
    pub(crate) fn new(config: &crate::config::HttpConfig) -> Dashboard {
        Dashboard {
            sessions: Sessions::new(
                std::time::Duration::from_millis(config.dashboard_session_idle_ms),
                usize::try_from(config.dashboard_max_sessions).unwrap_or(usize::MAX),
            ),
            live: Live::default(),
        }
    }
}
