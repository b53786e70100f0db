//! What the dashboard keeps between requests ([`Dashboard`], in the HTTP front
//! end's state): its logins and the Overview's shared live figures. A leaf of the
//! dashboard, so the front end's state does not import its pages.

use super::figures::Live;
use super::sessions::Sessions;

/// What the dashboard keeps: its logins and the live figures shared by every
/// open page.
#[derive(Default)]
pub(crate) struct Dashboard {
    pub(crate) sessions: Sessions,
    pub(crate) live: Live,
}
