//! `vodbridge vod status` and `vodbridge vod configure`: VOD's side of each source (callback
//! mode, `NotificationUrl`, event switches) beside what the bridge expects, and setting it
//! with `ModifyEventConfig`.

use std::{fmt::Write as _, num::NonZeroU32};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use vodbridge_tencent::{
    api::VodClient,
    event_config::{
        compare, desired_change, redact_token, EventConfig, EventSwitch, Mode, ModifyEventConfig,
    },
};

use crate::{
    config::{Settings, SourceKind, SubAppSelection, VodCheck},
    error::{Error, Result},
    sources::pull::{list_sub_apps, Listing},
};

/// What `status` found.
#[derive(Debug, Default)]
pub struct Status {
    /// The report, one block per source.
    pub report: String,
    /// Differences found (a check that failed counts as one).
    pub mismatches: usize,
}

/// What `configure` did.
#[derive(Debug, Default)]
pub struct Configured {
    /// The report, one line per source.
    pub report: String,
    /// Sources changed (or, with `dry_run`, that would be).
    pub changed: usize,
}

/// Runs one API call, trying again while VOD answers `RequestLimitExceeded` (the account's
/// 20 calls/s are shared with the running bridges' checks): up to 8 tries, 100 ms doubling.
async fn paced<T, F, Fut>(mut call: F) -> std::result::Result<T, vodbridge_tencent::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, vodbridge_tencent::Error>>,
{
    let mut pause = std::time::Duration::from_millis(100);
    for _ in 1..8 {
        match call().await {
            Err(e) if e.class() == vodbridge_tencent::api::ErrorClass::Throttled => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
    call().await
}

fn sub_app(check: &VodCheck) -> String {
    check
        .client
        .sub_app_id
        .map_or_else(|| "default".to_owned(), |id| id.to_string())
}

fn kind(settings: &Settings, source: &str) -> &'static str {
    match settings.sources.get(source).map(|s| &s.kind) {
        Some(SourceKind::Pull(_)) => "pull",
        _ => "push",
    }
}

/// For every source, VOD's event configuration beside what the bridge expects.
///
/// # Errors
///
/// Only when a client cannot be built (the configuration was validated, so not in practice);
/// a failed `DescribeEventConfig` is reported and counted as a mismatch.
pub async fn status(settings: &Settings) -> Result<Status> {
    let mut status = Status::default();
    for source in settings.sources.values() {
        let name = source.name.as_str();
        if let (SourceKind::Pull(pull), Some(check)) = (&source.kind, &source.vod) {
            if let Some(selection) = &pull.sub_apps {
                set_status(&mut status, name, selection, check).await?;
                continue;
            }
        }
        let Some(check) = &source.vod else {
            let _ = writeln!(
                status.report,
                "{name} ({}): not checked (a push source needs [sources.{name}.vod] credentials; vod_check = \"off\" turns the check off)",
                kind(settings, name)
            );
            continue;
        };
        let _ = writeln!(
            status.report,
            "{name} ({}, sub_app_id {}, {})",
            kind(settings, name),
            sub_app(check),
            check.client.endpoint
        );
        source_status(&mut status, name, check).await?;
    }
    Ok(status)
}

/// `status` of one sub-application's source: its mode, URL and switches, each beside what the
/// source expects.
async fn source_status(status: &mut Status, name: &str, check: &VodCheck) -> Result<()> {
    let client = VodClient::new(check.client.clone())
        .map_err(|e| Error::Config(format!("sources.{name}: {e}")))?;
    let actual = match paced(|| client.describe_event_config()).await {
        Ok(actual) => actual,
        Err(error) => {
            status.mismatches += 1;
            let _ = writeln!(status.report, "  DescribeEventConfig failed: {error}");
            return Ok(());
        }
    };
    let found = compare(&check.wanted(), &actual);
    status.mismatches += found.len();
    let missing = actual.missing();
    if !missing.is_empty() {
        let _ = writeln!(
            status.report,
            "  warning: VOD's answer left out {}; not checked",
            missing.join(", ")
        );
    }
    let mark = |what: &str| {
        found.iter().find(|m| m.what == what).map_or_else(
            || "ok".to_owned(),
            |m| format!("MISMATCH, expected {}", m.expected),
        )
    };
    let _ = writeln!(
        status.report,
        "  {:<24}{:<10}{}",
        "mode",
        shown(actual.mode),
        mark("mode")
    );
    let url = shown_url(actual.notification_url());
    let url_note = match (check.mode, &check.notification_url) {
        (Mode::Pull, _) => "not used in PULL mode".to_owned(),
        (Mode::Push, None) => "not checked: server.public_base_url is not set".to_owned(),
        (Mode::Push, Some(_)) => mark("notification_url"),
    };
    let _ = writeln!(
        status.report,
        "  {:<24}{url}  {url_note}",
        "notification_url"
    );
    for switch in EventSwitch::ALL {
        let note = if check.switches.contains(&switch) {
            mark(switch.name())
        } else {
            "not needed".to_owned()
        };
        let _ = writeln!(
            status.report,
            "  {:<24}{:<10}{note}",
            switch.name(),
            shown(actual.switch(switch))
        );
    }
    Ok(())
}

/// A member of VOD's answer for the report; `(not in the answer)` when VOD left it out.
fn shown(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "(not in the answer)".to_owned(), |v| v.to_string())
}

/// A callback URL for the report, its token redacted.
fn shown_url(url: Option<&str>) -> String {
    match url {
        None => "(not in the answer)".to_owned(),
        Some("") => "(none)".to_owned(),
        Some(url) => redact_token(url),
    }
}

fn describe_change(change: &ModifyEventConfig, actual: &EventConfig) -> String {
    let mut parts = Vec::new();
    if let Some(mode) = change.mode {
        parts.push(format!("Mode {} → {mode}", shown(actual.mode)));
    }
    if let Some(url) = &change.notification_url {
        let before = shown_url(actual.notification_url());
        parts.push(format!("NotificationUrl {before} → {}", redact_token(url)));
    }
    for switch in EventSwitch::ALL {
        if let Some(state) = change.switch(switch) {
            parts.push(format!(
                "{} {} → {state}",
                switch.parameter(),
                shown(actual.switch(switch))
            ));
        }
    }
    if change.sign_key.is_some() {
        parts.push("SignKey set (VOD does not show it back)".to_owned());
    }
    parts.join("; ")
}

/// Sets each source's sub-application (or only `only`) to what the bridge expects: the mode,
/// a push source's `NotificationUrl` (with `server.public_base_url`), the event switches it
/// lists, and its `SignKey`. Prints each change before making it; `dry_run` only prints.
///
/// # Errors
///
/// [`Error::Config`] for an unknown or uncheckable `only`; [`Error::VodApi`] with VOD's answer
/// (or the network's) when a call fails; [`Error::VodStillDiffers`] when VOD did not take the
/// change.
pub async fn configure(
    settings: &Settings,
    only: Option<&str>,
    chosen: &[u64],
    dry_run: bool,
) -> Result<Configured> {
    if !chosen.is_empty() {
        let is_set = only
            .and_then(|name| settings.sources.get(name))
            .is_some_and(|s| matches!(&s.kind, SourceKind::Pull(p) if p.sub_apps.is_some()));
        if !is_set {
            return Err(Error::Config(
                "--sub-app-id chooses sub-applications of one source with sub_app_ids: name it with --source".into(),
            ));
        }
    }
    if let Some(name) = only {
        match settings.sources.get(name) {
            None => return Err(Error::Config(format!("no source {name:?} in the configuration"))),
            Some(source) if source.vod.is_none() => {
                return Err(Error::Config(format!(
                    "source {name} cannot be configured: a push source needs [sources.{name}.vod] credentials, and vod_check must not be \"off\""
                )))
            }
            Some(_) => {}
        }
    }
    let mut done = Configured::default();
    for source in settings.sources.values() {
        let name = source.name.as_str();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Some(check) = &source.vod else {
            continue;
        };
        if let SourceKind::Pull(pull) = &source.kind {
            if let Some(selection) = &pull.sub_apps {
                let set = SetRequest {
                    name,
                    selection,
                    check,
                    chosen,
                    dry_run,
                };
                set_configure(&mut done, &set).await?;
                continue;
            }
        }
        source_configure(&mut done, name, check, dry_run).await?;
    }
    if dry_run {
        let _ = writeln!(done.report, "(dry run: nothing was changed)");
    }
    Ok(done)
}

/// `configure` of one sub-application's source: the change it needs, printed, then made
/// (unless `dry_run`) and read back.
async fn source_configure(
    done: &mut Configured,
    name: &str,
    check: &VodCheck,
    dry_run: bool,
) -> Result<()> {
    let client = VodClient::new(check.client.clone())
        .map_err(|e| Error::Config(format!("sources.{name}: {e}")))?;
    let actual = paced(|| client.describe_event_config())
        .await
        .map_err(vod_error(name, "DescribeEventConfig"))?;
    let change = desired_change(&check.wanted(), &actual);
    let header = format!("{name} (sub_app_id {})", sub_app(check));
    if change.is_empty() {
        let _ = writeln!(done.report, "{header}: as expected, nothing to change");
        return Ok(());
    }
    done.changed += 1;
    let _ = writeln!(
        done.report,
        "{header}: {}",
        describe_change(&change, &actual)
    );
    if check.mode == Mode::Push && check.notification_url.is_none() {
        let _ = writeln!(
            done.report,
            "  NotificationUrl left as it is: set server.public_base_url to have it set"
        );
    }
    if dry_run {
        return Ok(());
    }
    paced(|| client.modify_event_config(&change))
        .await
        .map_err(vod_error(name, "ModifyEventConfig"))?;
    let after = paced(|| client.describe_event_config())
        .await
        .map_err(vod_error(name, "DescribeEventConfig"))?;
    let left = compare(&check.wanted(), &after);
    if !left.is_empty() {
        return Err(Error::VodStillDiffers {
            source_name: name.to_owned(),
            differences: left.iter().map(|m| m.what).collect::<Vec<_>>().join(", "),
        });
    }
    let _ = writeln!(done.report, "  done");
    Ok(())
}

/// Wraps a failed call of `source`'s client as [`Error::VodApi`].
fn vod_error(source: &str, call: &'static str) -> impl FnOnce(vodbridge_tencent::Error) -> Error {
    let source_name = source.to_owned();
    move |error| Error::VodApi {
        source_name,
        call,
        source: error,
    }
}

/// `DescribeEventConfig` and `ModifyEventConfig` calls per second, each, for a source with
/// `sub_app_ids`: VOD allows 20 of each per account, and running bridges check their
/// sub-applications' mode at 5 per second.
const SET_CALLS_PER_SEC: u32 = 15;

/// A limiter of [`SET_CALLS_PER_SEC`].
fn set_pacer() -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(SET_CALLS_PER_SEC).unwrap_or(NonZeroU32::MIN),
    ))
}

/// The sub-applications of source `name`, and a client for each one it pulls.
async fn set_members(
    name: &str,
    selection: &SubAppSelection,
    check: &VodCheck,
) -> Result<(Listing, Vec<(u64, VodClient)>)> {
    let lister = VodClient::new(check.client.clone())
        .map_err(|e| Error::Config(format!("sources.{name}: {e}")))?;
    let listing = paced(|| list_sub_apps(&lister, selection))
        .await
        .map_err(vod_error(name, "DescribeSubAppIds"))?;
    let mut clients = Vec::with_capacity(listing.pulled.len());
    for &id in &listing.pulled {
        clients.push((id, lister.for_sub_app(id)));
    }
    Ok((listing, clients))
}

/// `101 (news)`, or `101` when VOD gave no name.
fn member_name(listing: &Listing, id: u64) -> String {
    match listing.names.get(&id).filter(|n| !n.is_empty()) {
        Some(name) => format!("{id} ({name})"),
        None => id.to_string(),
    }
}

/// `status` of a source with `sub_app_ids`: one line per sub-application (its mode, then `ok`
/// or what differs), then the ones it does not pull and why.
async fn set_status(
    status: &mut Status,
    name: &str,
    selection: &SubAppSelection,
    check: &VodCheck,
) -> Result<()> {
    let which = if selection.listed.is_some() {
        "a list"
    } else {
        "\"all\""
    };
    let (listing, clients) = match set_members(name, selection, check).await {
        Ok(found) => found,
        Err(error) => {
            status.mismatches += 1;
            let _ = writeln!(
                status.report,
                "{name} (pull, sub_app_ids {which}, {})\n  {error}",
                check.client.endpoint
            );
            return Ok(());
        }
    };
    let _ = writeln!(
        status.report,
        "{name} (pull, sub_app_ids {which}, {}): {} pulled, {} excluded, {} not On",
        check.client.endpoint,
        listing.pulled.len(),
        listing.excluded.len(),
        listing.not_on.len()
    );
    let pacer = set_pacer();
    for (id, client) in &clients {
        let shown_id = member_name(&listing, *id);
        let (line, differences) = member_status(client, check, &pacer).await;
        status.mismatches += differences;
        let _ = writeln!(status.report, "  {shown_id:<28}{line}");
    }
    for id in &listing.excluded {
        let _ = writeln!(
            status.report,
            "  {:<28}not pulled: excluded by the configuration",
            member_name(&listing, *id)
        );
    }
    for (id, state) in &listing.not_on {
        let _ = writeln!(
            status.report,
            "  {:<28}not pulled: status {}",
            member_name(&listing, *id),
            state.as_str()
        );
    }
    Ok(())
}

/// One sub-application's status line (after its id) and its number of differences.
async fn member_status(
    client: &VodClient,
    check: &VodCheck,
    pacer: &DefaultDirectRateLimiter,
) -> (String, usize) {
    let actual = match paced(|| async {
        pacer.until_ready().await;
        client.describe_event_config().await
    })
    .await
    {
        Ok(actual) => actual,
        Err(error) => return (format!("DescribeEventConfig failed: {error}"), 1),
    };
    let found = compare(&check.wanted(), &actual);
    let verdict = if found.is_empty() {
        "ok".to_owned()
    } else {
        let parts: Vec<String> = found
            .iter()
            .map(|m| format!("{} {} (expected {})", m.what, m.actual, m.expected))
            .collect();
        format!("MISMATCH: {}", parts.join("; "))
    };
    (
        format!("mode {:<6}{verdict}", shown(actual.mode)),
        found.len(),
    )
}

/// What `configure` does to a source with `sub_app_ids`.
struct SetRequest<'a> {
    name: &'a str,
    selection: &'a SubAppSelection,
    check: &'a VodCheck,
    /// Only these sub-applications (empty: every one the source pulls).
    chosen: &'a [u64],
    dry_run: bool,
}

/// `configure` of a source with `sub_app_ids`: each pulled (or chosen) sub-application that
/// differs is set, paced at [`SET_CALLS_PER_SEC`] per action.
async fn set_configure(done: &mut Configured, set: &SetRequest<'_>) -> Result<()> {
    let name = set.name;
    let (listing, clients) = set_members(name, set.selection, set.check).await?;
    if let Some(unknown) = set.chosen.iter().find(|id| !listing.pulled.contains(id)) {
        return Err(Error::Config(format!(
            "--sub-app-id {unknown} is not a sub-application source {name} pulls (it pulls {})",
            listing
                .pulled
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (describe, modify) = (set_pacer(), set_pacer());
    for (id, client) in &clients {
        if !set.chosen.is_empty() && !set.chosen.contains(id) {
            continue;
        }
        let label = format!("{name}/{id}");
        let actual = paced(|| async {
            describe.until_ready().await;
            client.describe_event_config().await
        })
        .await
        .map_err(vod_error(&label, "DescribeEventConfig"))?;
        let change = desired_change(&set.check.wanted(), &actual);
        let header = format!("{name} sub_app_id {}", member_name(&listing, *id));
        if change.is_empty() {
            let _ = writeln!(done.report, "{header}: as expected, nothing to change");
            continue;
        }
        done.changed += 1;
        let _ = writeln!(
            done.report,
            "{header}: {}",
            describe_change(&change, &actual)
        );
        if set.dry_run {
            continue;
        }
        paced(|| async {
            modify.until_ready().await;
            client.modify_event_config(&change).await
        })
        .await
        .map_err(vod_error(&label, "ModifyEventConfig"))?;
        let after = paced(|| async {
            describe.until_ready().await;
            client.describe_event_config().await
        })
        .await
        .map_err(vod_error(&label, "DescribeEventConfig"))?;
        let left = compare(&set.check.wanted(), &after);
        if !left.is_empty() {
            return Err(Error::VodStillDiffers {
                source_name: label,
                differences: left.iter().map(|m| m.what).collect::<Vec<_>>().join(", "),
            });
        }
        let _ = writeln!(done.report, "  done");
    }
    Ok(())
}
