//! The Admin page: users, vhosts and permissions, for users tagged
//! `administrator` (what `weir user|vhost|permissions` and `/api/users`,
//! `/api/vhosts`, `/api/permissions` do). Changes write `access.json` durably and
//! hash passwords, so they run on a blocking thread, as the API's do.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::response::Response;
use serde::Deserialize;
use weir_broker::Broker;
use weir_broker::access::{Access, AccessError, Patterns};

use super::{Flash, PageInfo, done, render};
use crate::admin_routes::change;
use crate::auth::Caller;

const BACK: &str = "/ui/admin";

/// Runs `change` of the access model as an administrator (on a blocking thread, as
/// the API does) and goes back to the page saying `done_text`, or why not.
async fn administer<T: Send + 'static>(
    caller: &Caller,
    broker: &Broker,
    done_text: String,
    change_access: impl FnOnce(&Access) -> Result<T, AccessError> + Send + 'static,
) -> Response {
    if let Err(e) = caller.allow_administrator() {
        return done(BACK, Err(e.reason));
    }
    let outcome = change(broker, change_access).await;
    done(BACK, outcome.map(|_| done_text).map_err(|e| e.reason))
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    page: PageInfo,
    may_admin: bool,
    /// Name, tags.
    users: Vec<(String, String)>,
    vhosts: Vec<String>,
    /// User, vhost, configure, write, read.
    permissions: Vec<(String, String, String, String, String)>,
}

/// `GET /ui/admin`.
pub(crate) async fn page(
    caller: Caller,
    State(broker): State<Broker>,
    Query(flash): Query<Flash>,
) -> Response {
    let page = PageInfo::new("admin", &caller, &flash);
    if caller.allow_administrator().is_err() {
        return render(&AdminPage {
            page,
            may_admin: false,
            users: Vec::new(),
            vhosts: Vec::new(),
            permissions: Vec::new(),
        });
    }
    let access = broker.access();
    render(&AdminPage {
        page,
        may_admin: true,
        users: access
            .users()
            .into_iter()
            .map(|u| (u.name, u.tags.join(", ")))
            .collect(),
        vhosts: access.vhosts(),
        permissions: access
            .permissions()
            .into_iter()
            .map(|p| {
                let q = p.patterns;
                (p.user, p.vhost, q.configure, q.write, q.read)
            })
            .collect(),
    })
}

#[derive(Deserialize)]
pub(crate) struct UserForm {
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    tags: String,
}

/// `POST /ui/admin/users`: adds a user, or changes its tags (and its password if
/// one is given).
pub(crate) async fn save_user(
    caller: Caller,
    State(broker): State<Broker>,
    Form(form): Form<UserForm>,
) -> Response {
    if let Err(e) = caller.allow_administrator() {
        return done(BACK, Err(e.reason));
    }
    let tags: Vec<String> = form
        .tags
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let name = form.name.trim().to_owned();
    let exists = broker.access().has_user(&name);
    if !exists && form.password.is_empty() {
        return done(BACK, Err("A new user needs a password.".to_owned()));
    }
    let verb = if exists { "Changed" } else { "Added" };
    administer(
        &caller,
        &broker,
        format!("{verb} user {name}."),
        move |access| {
            if !access.has_user(&name) {
                return access.add_user(&name, &form.password, &tags);
            }
            access.set_tags(&name, &tags)?;
            if !form.password.is_empty() {
                access.set_password(&name, &form.password)?;
            }
            Ok(())
        },
    )
    .await
}

#[derive(Deserialize)]
pub(crate) struct NameForm {
    name: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /ui/admin/users/delete`.
pub(crate) async fn delete_user(
    caller: Caller,
    State(broker): State<Broker>,
    Form(form): Form<NameForm>,
) -> Response {
    let said = format!("Deleted user {}.", form.name);
    administer(&caller, &broker, said, move |access| {
        access.remove_user(&form.name)
    })
    .await
}

/// `POST /ui/admin/vhosts`.
pub(crate) async fn add_vhost(
    caller: Caller,
    State(broker): State<Broker>,
    Form(form): Form<NameForm>,
) -> Response {
    let name = form.name.trim().to_owned();
    let said = format!("Added vhost {name}.");
    administer(&caller, &broker, said, move |access| {
        access.add_vhost(&name)
    })
    .await
}

/// `POST /ui/admin/vhosts/delete`: with its queues and exchanges; needs the
/// form's confirmation box.
pub(crate) async fn delete_vhost(
    caller: Caller,
    State(broker): State<Broker>,
    Form(form): Form<NameForm>,
) -> Response {
    if let Err(e) = caller.allow_administrator() {
        return done(BACK, Err(e.reason));
    }
    if form.confirm.as_deref() != Some("yes") {
        return done(
            BACK,
            Err("Nothing deleted: tick the box to confirm.".to_owned()),
        );
    }
    let outcome = broker.delete_vhost(&form.name).await;
    done(
        BACK,
        outcome
            .map(|()| format!("Deleted vhost {} with its queues.", form.name))
            .map_err(|e| e.to_string()),
    )
}

#[derive(Deserialize)]
pub(crate) struct PermissionForm {
    user: String,
    vhost: String,
    #[serde(default)]
    configure: String,
    #[serde(default)]
    write: String,
    #[serde(default)]
    read: String,
}

/// `POST /ui/admin/permissions`.
pub(crate) async fn set_permissions(
    caller: Caller,
    State(broker): State<Broker>,
    Form(form): Form<PermissionForm>,
) -> Response {
    let said = format!("Set {}'s permissions in {}.", form.user, form.vhost);
    let patterns = Patterns {
        configure: form.configure,
        write: form.write,
        read: form.read,
    };
    administer(&caller, &broker, said, move |access| {
        access.set_permissions(&form.user, &form.vhost, patterns)
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct ClearForm {
    user: String,
    vhost: String,
}

/// `POST /ui/admin/permissions/delete`.
pub(crate) async fn clear_permissions(
    caller: Caller,
    State(broker): State<Broker>,
    Form(form): Form<ClearForm>,
) -> Response {
    let said = format!("Cleared {}'s permissions in {}.", form.user, form.vhost);
    administer(&caller, &broker, said, move |access| {
        access.clear_permissions(&form.user, &form.vhost)
    })
    .await
}
