//! `weir user|vhost|permissions …`: manage who may do what, as `rabbitmqctl
//! add_user|change_password|set_user_tags|delete_user|list_users|add_vhost|…` do,
//! through the running broker's HTTP API (docs/security.md). The caller must be an
//! administrator (`--user`/`--password`, default guest/guest).

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};

use super::Common;
use super::api::{self, Api, ApiError};
use super::table::{Align, table};

/// `weir user …`.
#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (as `rabbitmqctl add_user`); fails if it exists.
    Add(UserAddArgs),
    /// Change a user's password (as `rabbitmqctl change_password`).
    Passwd(UserPasswdArgs),
    /// Replace a user's tags (as `rabbitmqctl set_user_tags`); none clears them.
    Tags(UserTagsArgs),
    /// Delete a user and its permissions.
    Rm(UserNameArgs),
    /// List users and their tags.
    Ls(ListArgs),
}

/// `weir user add`.
#[derive(clap::Args, Debug)]
pub struct UserAddArgs {
    /// The new user's name.
    name: String,
    /// Its password (or --password-stdin, which keeps it out of the process list).
    #[arg(value_name = "PASSWORD", required_unless_present = "password_stdin")]
    new_password: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long, conflicts_with = "new_password")]
    password_stdin: bool,
    /// Tags, comma-separated: administrator, management, monitoring.
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    tags: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// `weir user passwd`.
#[derive(clap::Args, Debug)]
pub struct UserPasswdArgs {
    /// The user.
    name: String,
    /// The new password (or --password-stdin).
    #[arg(value_name = "PASSWORD", required_unless_present = "password_stdin")]
    new_password: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long, conflicts_with = "new_password")]
    password_stdin: bool,
    #[command(flatten)]
    common: Common,
}

/// `weir user tags`.
#[derive(clap::Args, Debug)]
pub struct UserTagsArgs {
    /// The user.
    name: String,
    /// Its tags from now on.
    tags: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// A command that takes one user name.
#[derive(clap::Args, Debug)]
pub struct UserNameArgs {
    /// The user.
    name: String,
    #[command(flatten)]
    common: Common,
}

/// A listing.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    common: Common,
}

/// `weir vhost …`.
#[derive(clap::Subcommand, Debug)]
pub enum VhostCommand {
    /// Add a vhost.
    Add(VhostArgs),
    /// Delete a vhost and the permissions in it.
    Rm(VhostArgs),
    /// List vhosts.
    Ls(ListArgs),
}

/// A command that takes one vhost name.
#[derive(clap::Args, Debug)]
pub struct VhostArgs {
    /// The vhost.
    name: String,
    #[command(flatten)]
    common: Common,
}

/// `weir permissions …`.
#[derive(clap::Subcommand, Debug)]
pub enum PermissionsCommand {
    /// Set a user's configure, write and read patterns in a vhost (as `rabbitmqctl
    /// set_permissions`): regular expressions matched anywhere in a queue or exchange
    /// name unless anchored; "" matches nothing, ".*" everything.
    Set(PermissionsSetArgs),
    /// Remove a user's permissions in a vhost.
    Clear(PermissionsClearArgs),
    /// List permissions, by vhost then user (only those of `--vhost` if given).
    Ls(PermissionsListArgs),
}

/// `weir permissions set`.
#[derive(clap::Args, Debug)]
pub struct PermissionsSetArgs {
    /// The user.
    #[arg(value_name = "USER")]
    username: String,
    /// What it may declare and delete.
    configure: String,
    /// What it may publish to (exchanges) and bind to (queues).
    write: String,
    /// What it may consume from (queues) and bind from (exchanges).
    read: String,
    #[command(flatten)]
    common: Common,
}

/// `weir permissions clear`.
#[derive(clap::Args, Debug)]
pub struct PermissionsClearArgs {
    /// The user.
    #[arg(value_name = "USER")]
    username: String,
    #[command(flatten)]
    common: Common,
}

/// `weir permissions ls`.
#[derive(clap::Args, Debug)]
pub struct PermissionsListArgs {
    #[command(flatten)]
    common: Common,
}

/// `weir definitions …`.
#[derive(clap::Subcommand, Debug)]
pub enum DefinitionsCommand {
    /// Write users (with password hashes), vhosts, permissions, queues, exchanges
    /// and bindings to FILE ("-": stdout), in RabbitMQ's definitions shape.
    Export(DefinitionsFileArgs),
    /// Build what FILE ("-": stdin) describes: a weir export or RabbitMQ's
    /// (`rabbitmqctl export_definitions`).
    Import(DefinitionsFileArgs),
}

/// `weir definitions export|import FILE`.
#[derive(clap::Args, Debug)]
pub struct DefinitionsFileArgs {
    /// The file; "-" for stdout (export) or stdin (import).
    file: String,
    #[command(flatten)]
    common: Common,
}

/// Runs `weir definitions …`.
pub async fn definitions(cmd: DefinitionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DefinitionsCommand::Export(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(Method::GET, &["api", "definitions"], None)
                .await?;
            let text = serde_json::to_string_pretty(&reply.body)? + "\n";
            if args.file == "-" {
                print!("{text}");
            } else {
                std::fs::write(&args.file, text)
                    .with_context(|| format!("writing {}", args.file))?;
                let count = |key: &str| list(&reply.body, key).count();
                eprintln!(
                    "exported {} users, {} vhosts, {} queues, {} exchanges, {} bindings to {}",
                    count("users"),
                    count("vhosts"),
                    count("queues"),
                    count("exchanges"),
                    count("bindings"),
                    args.file
                );
            }
        }
        DefinitionsCommand::Import(args) => {
            let api = args.common.server.api()?;
            let document = if args.file == "-" {
                let mut document = String::new();
                std::io::stdin()
                    .read_to_string(&mut document)
                    .context("reading definitions from stdin")?;
                document
            } else {
                std::fs::read_to_string(&args.file)
                    .with_context(|| format!("reading {}", args.file))?
            };
            let body: Value = serde_json::from_str(&document)
                .with_context(|| format!("{} is not JSON", args.file))?;
            let reply = api
                .request(Method::POST, &["api", "definitions"], Some(&body))
                .await?;
            let r = &reply.body;
            let n = |key: &str| r[key].as_u64().unwrap_or(0);
            let mut summary = format!(
                "imported {} users, {} vhosts, {} permissions; created {} queues, {} exchanges, {} bindings ({} existed)",
                n("users"),
                n("vhosts"),
                n("permissions"),
                n("queues_created"),
                n("exchanges_created"),
                n("bindings_created"),
                n("existed")
            );
            let skipped: Vec<String> = list(r, "not_imported").map(text).collect();
            if !skipped.is_empty() {
                summary += "; not imported (weir has no counterpart): ";
                summary += &skipped.join(", ");
            }
            done(&args.common, r, &summary);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The password from the argument, or the first line of stdin.
fn password(given: Option<String>, from_stdin: bool) -> anyhow::Result<String> {
    if let (Some(p), false) = (given, from_stdin) {
        return Ok(p);
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the password from stdin")?;
    let line = text.lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(!line.is_empty(), "stdin held no password");
    Ok(line)
}

/// Whether user `name` exists.
async fn user_exists(api: &Api, name: &str) -> anyhow::Result<bool> {
    match api
        .request(Method::GET, &["api", "users", name], None)
        .await
    {
        Ok(_) => Ok(true),
        Err(ApiError::Server { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn done(common: &Common, body: &Value, text: &str) {
    if common.json {
        println!("{}", api::to_json_line(body));
    } else {
        println!("{text}");
    }
}

/// Runs `weir user …`.
pub async fn user(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add(args) => {
            let api = args.common.server.api()?;
            let password = password(args.new_password, args.password_stdin)?;
            anyhow::ensure!(
                !user_exists(&api, &args.name).await?,
                "user '{}' already exists",
                args.name
            );
            let body = json!({"password": password, "tags": args.tags});
            let reply = api
                .request(Method::PUT, &["api", "users", &args.name], Some(&body))
                .await?;
            done(
                &args.common,
                &reply.body,
                &format!("added user {}", args.name),
            );
        }
        UserCommand::Passwd(args) => {
            let api = args.common.server.api()?;
            let password = password(args.new_password, args.password_stdin)?;
            anyhow::ensure!(
                user_exists(&api, &args.name).await?,
                "no user '{}'",
                args.name
            );
            let body = json!({ "password": password });
            let reply = api
                .request(Method::PUT, &["api", "users", &args.name], Some(&body))
                .await?;
            done(
                &args.common,
                &reply.body,
                &format!("changed the password of {}", args.name),
            );
        }
        UserCommand::Tags(args) => {
            let api = args.common.server.api()?;
            anyhow::ensure!(
                user_exists(&api, &args.name).await?,
                "no user '{}'",
                args.name
            );
            let body = json!({ "tags": args.tags });
            let reply = api
                .request(Method::PUT, &["api", "users", &args.name], Some(&body))
                .await?;
            done(
                &args.common,
                &reply.body,
                &format!("tags of {}: {}", args.name, args.tags.join(", ")),
            );
        }
        UserCommand::Rm(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(Method::DELETE, &["api", "users", &args.name], None)
                .await?;
            done(
                &args.common,
                &reply.body,
                &format!("deleted user {}", args.name),
            );
        }
        UserCommand::Ls(args) => {
            let api = args.common.server.api()?;
            let reply = api.request(Method::GET, &["api", "users"], None).await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                let rows: Vec<Vec<String>> = list(&reply.body, "users")
                    .map(|u| vec![text(&u["name"]), joined(&u["tags"])])
                    .collect();
                print!(
                    "{}",
                    table(&[("NAME", Align::Left), ("TAGS", Align::Left)], &rows)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `weir vhost …`.
pub async fn vhost(cmd: VhostCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VhostCommand::Add(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(Method::PUT, &["api", "vhosts", &args.name], None)
                .await?;
            let text = if reply.status == reqwest::StatusCode::CREATED {
                format!("added vhost {}", args.name)
            } else {
                format!("vhost {} exists", args.name)
            };
            done(&args.common, &reply.body, &text);
        }
        VhostCommand::Rm(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(Method::DELETE, &["api", "vhosts", &args.name], None)
                .await?;
            done(
                &args.common,
                &reply.body,
                &format!("deleted vhost {}", args.name),
            );
        }
        VhostCommand::Ls(args) => {
            let api = args.common.server.api()?;
            let reply = api.request(Method::GET, &["api", "vhosts"], None).await?;
            if args.common.json {
                println!("{}", api::to_json_line(&reply.body));
            } else {
                let rows: Vec<Vec<String>> = list(&reply.body, "vhosts")
                    .map(|v| vec![text(&v["name"])])
                    .collect();
                print!("{}", table(&[("NAME", Align::Left)], &rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `weir permissions …`.
pub async fn permissions(cmd: PermissionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PermissionsCommand::Set(args) => {
            let api = args.common.server.api()?;
            let body = json!({"configure": args.configure, "write": args.write, "read": args.read});
            let reply = api
                .request(
                    Method::PUT,
                    &["api", "permissions", args.common.vhost(), &args.username],
                    Some(&body),
                )
                .await?;
            done(
                &args.common,
                &reply.body,
                &format!(
                    "set permissions of {} in {}",
                    args.username,
                    args.common.vhost()
                ),
            );
        }
        PermissionsCommand::Clear(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(
                    Method::DELETE,
                    &["api", "permissions", args.common.vhost(), &args.username],
                    None,
                )
                .await?;
            done(
                &args.common,
                &reply.body,
                &format!(
                    "cleared permissions of {} in {}",
                    args.username,
                    args.common.vhost()
                ),
            );
        }
        PermissionsCommand::Ls(args) => {
            let api = args.common.server.api()?;
            let reply = api
                .request(Method::GET, &["api", "permissions"], None)
                .await?;
            let wanted = |p: &&Value| {
                args.common
                    .server
                    .vhost
                    .as_deref()
                    .is_none_or(|v| p["vhost"] == v)
            };
            if args.common.json {
                let kept: Vec<&Value> = list(&reply.body, "permissions").filter(wanted).collect();
                println!("{}", api::to_json_line(&json!({ "permissions": kept })));
            } else {
                let rows: Vec<Vec<String>> = list(&reply.body, "permissions")
                    .filter(wanted)
                    .map(|p| {
                        ["vhost", "user", "configure", "write", "read"]
                            .iter()
                            .map(|k| text(&p[*k]))
                            .collect()
                    })
                    .collect();
                let columns = [
                    ("VHOST", Align::Left),
                    ("USER", Align::Left),
                    ("CONFIGURE", Align::Left),
                    ("WRITE", Align::Left),
                    ("READ", Align::Left),
                ];
                print!("{}", table(&columns, &rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list<'a>(body: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    body[key].as_array().into_iter().flatten()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn joined(v: &Value) -> String {
    let tags: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if tags.is_empty() {
        "-".to_owned()
    } else {
        tags.join(", ")
    }
}
