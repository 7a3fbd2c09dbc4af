//! `roomengine-exporter callbacks show|set`: reads and registers the app's one
//! Room Engine callback URL with the config file's credentials, keeping the
//! commands the app already registered and adding those the exporter handles.

use std::path::Path;
use std::sync::Arc;

use crate::api::model::CallbackSetting;
use crate::api::{ApiClient, ApiMetrics};
use crate::budget::Budget;
use crate::callbacks::command::{Spelling, COMMANDS};
use crate::config;
use crate::BoxError;

/// `callbacks` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CallbacksCommand {
    /// Print the registered callback URL and commands, and which handled commands are missing.
    Show,
    /// Register URL as the app's callback URL (it replaces the app's current one).
    Set {
        /// The URL Tencent is to POST callbacks to.
        #[arg(long)]
        url: String,
        /// Really change the registration; without it nothing is changed.
        #[arg(long)]
        yes: bool,
    },
}

/// How a `callbacks` command ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `set` without `--yes`: nothing was changed.
    NotConfirmed,
}

/// The commands to register: the handled ones (an unregistered spelling
/// only when the app has it already) then the other commands already
/// registered, each once.
fn wanted(current: &[String]) -> Vec<String> {
    let has = |name: &str| current.iter().any(|r| r == name);
    let mut commands: Vec<String> = COMMANDS
        .iter()
        .filter(|s| s.registered || has(s.name))
        .map(|s| s.name.to_owned())
        .collect();
    for command in current {
        if !commands.contains(command) {
            commands.push(command.clone());
        }
    }
    commands
}

/// Handled commands none of whose spellings is registered, by the spelling to register.
fn missing(current: &[String]) -> Vec<&'static str> {
    let has = |s: &Spelling| s.command.names().any(|name| current.iter().any(|r| r == name));
    COMMANDS
        .iter()
        .filter(|s| s.registered && !has(s))
        .map(|s| s.name)
        .collect()
}

fn list(commands: &[String]) -> String {
    if commands.is_empty() {
        "(none)".into()
    } else {
        commands.join(", ")
    }
}

/// The lines describing a registration.
fn describe(setting: &CallbackSetting) -> String {
    let url = if setting.url.is_empty() {
        "(none)"
    } else {
        &setting.url
    };
    let missing = missing(&setting.commands);
    let missing = if missing.is_empty() {
        "(none)".to_owned()
    } else {
        missing.join(", ")
    };
    format!(
        "callback URL: {url}\nregistered commands: {}\nmissing for the exporter: {missing}\n",
        list(&setting.commands)
    )
}

/// Registers `url` with the handled commands plus those in `current`
/// (set_callback, or update_callback when one is set); the setting read back.
pub async fn register(
    client: &ApiClient,
    current: &CallbackSetting,
    url: &str,
) -> Result<CallbackSetting, BoxError> {
    let budget = client.budget();
    let commands = wanted(&current.commands);
    let update = !current.url.is_empty();
    client
        .set_callback(budget.acquire().await, update, url, &commands)
        .await
        .map_err(|e| {
            let call = if update { "update_callback" } else { "set_callback" };
            format!("{call} failed, nothing was changed: {e}")
        })?;
    let now = client
        .get_callback(budget.acquire().await)
        .await
        .map_err(|e| format!("the callback was set, but reading it back failed: {e}"))?;
    Ok(now)
}

/// Runs `command` with the credentials of the config file at `path`,
/// printing to stdout; errors are redacted by the API client.
pub async fn run(path: &Path, command: CallbacksCommand) -> Result<Outcome, BoxError> {
    let config = config::load(path, &config::ProcessSecrets)?;
    let budget = Arc::new(Budget::new(config.rate_limit));
    let client = ApiClient::new(
        &config,
        budget.clone(),
        ApiMetrics::new(&prometheus::Registry::new()),
    )?;
    let current = client
        .get_callback(budget.acquire().await)
        .await
        .map_err(|e| format!("get_callback failed: {e}"))?;
    let (url, yes) = match command {
        CallbacksCommand::Show => {
            print!("{}", describe(&current));
            return Ok(Outcome::Done);
        }
        CallbacksCommand::Set { url, yes } => (url, yes),
    };
    print!("now registered:\n{}", describe(&current));
    println!(
        "An app has only ONE callback URL: setting {url} replaces the one registered, \
         which is usually the app backend's. To keep that backend, register a tee \
         (e.g. nginx mirror) that forwards each callback to both."
    );
    if !yes {
        eprintln!("nothing was changed: add --yes to register {url}");
        return Ok(Outcome::NotConfirmed);
    }
    let now = register(&client, &current, &url).await?;
    print!("registered:\n{}", describe(&now));
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|&s| s.to_owned()).collect()
    }

    #[test]
    fn either_update_spelling_satisfies_and_other_commands_are_kept() {
        let current = names(&[
            "Room.CallbackAfterUpdateRoomInfo",
            "Room.CallbackBeforeCreateRoom",
        ]);
        assert_eq!(
            missing(&current),
            [
                "Room.CallbackAfterCreateRoom",
                "Room.CallbackAfterDestroyRoom",
                "Room.CallbackAfterMemberEnter",
                "Room.CallbackAfterMemberLeave",
                "Mic.CallbackAfterSeatInfoChanged",
            ]
        );
        let wanted = wanted(&current);
        assert_eq!(wanted.len(), 8, "{wanted:?}");
        assert_eq!(
            wanted.last().map(String::as_str),
            Some("Room.CallbackBeforeCreateRoom")
        );
        assert!(missing(&wanted).is_empty());
        assert_eq!(super::wanted(&[]).len(), 6);
    }
}
