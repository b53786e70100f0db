//! A small client of the broker's REST API (`docs/http-api.md`), shared by the client
//! commands, `weir worker` and `weir bench`. It only moves JSON: the broker checks
//! every argument, so the commands show the broker's own `reason` when it refuses.
//!
//! `calls` holds [`Api`], one method per endpoint, and how a request is made (URLs,
//! timeouts); `types` the answers the commands read typed and the arguments they
//! pass; `error` what a failed call says, and which failures are worth a retry.

mod calls;
mod error;
mod types;

pub use calls::{Api, DEFAULT_EXCHANGE, DEFAULT_SERVER};
pub use error::ApiError;
pub use types::{
    BindingInfo, BindingList, Delivery, ExchangeInfo, ExchangeList, Messages, PublishOutcome,
    PublishReply, QueueInfo, QueueList, Reply, Settle, SubscriptionInfo, SubscriptionList,
    to_json_line,
};
