//! `tandem chat`: talk to the flows in the terminal, with no WhatsApp account. Buttons and
//! list rows show as numbered choices; after each turn the decision, the mode and the slots
//! are shown. With `--embedder` the semantic stage answers what the local model is unsure of,
//! as in the server.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_domain::{MessageContent, OutboundContent, Timestamp};
use tandem_engine::sandbox::Outcome;
use tandem_engine::{FlowsHandle, Responder, Sandbox};

const HELP: &str = "Type as the customer would. A number picks one of the bot's choices.
  /echo TEXT      a person answers from the phone (the bot pauses)
  /takeover       an agent takes the conversation through the agent API
  /release        the agent hands it back to the bot
  /close          the agent closes it (back to the bot, the flow's answers cleared)
  /wait 31m       let time pass (the bot resumes after human_idle, 30m)
  /image [CAPTION], /location LAT LON   send an image or a location
  /state          show the conversation record
  /quit           leave";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Runs the chat on stdin / stdout until end of input or `/quit`; with `semantic`, the
/// semantic stage is on (its head built before the first message).
pub(crate) fn run(
    flows: &Path,
    variables: &BTreeMap<String, String>,
    contact: Option<String>,
    semantic: Option<&tandem_server::config::EmbedderSettings>,
) -> anyhow::Result<()> {
    let loaded = tandem_flows::load_dir(flows, variables)
        .map_err(|e| anyhow::anyhow!("the flows are invalid:\n{e}"))?;
    let count = loaded.bot.flows.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut responder = Responder::new(
        FlowsHandle::new(loaded.bot),
        tandem_engine::responder::call_client()?,
    );
    let mut out = std::io::stdout().lock();
    let _scratch = match semantic {
        Some(settings) => {
            let scratch =
                Scratch(std::env::temp_dir().join(format!("tandem-chat-{}", std::process::id())));
            std::fs::create_dir_all(&scratch.0)
                .with_context(|| format!("creating {}", scratch.0.display()))?;
            let store_path = scratch.0.join("embeddings.redb");
            let stage = runtime.block_on(async {
                let store = tandem_store::open(
                    &store_path.to_string_lossy(),
                    tandem_store::StoreOptions::default(),
                )
                .await?;
                let embedder = tandem_server::startup::embedder(settings)?;
                let stage = Arc::new(tandem_engine::semantic::SemanticStage::new(
                    embedder,
                    store,
                    settings.options.clone(),
                ));
                let started = std::time::Instant::now();
                let head = stage.prepare(&responder.flows().current()).await?;
                writeln!(
                    out,
                    "semantic stage on: {} ({} intents, ready in {:.1} s)",
                    head.model(),
                    head.intents().len(),
                    started.elapsed().as_secs_f64()
                )?;
                anyhow::Ok(stage)
            })?;
            responder = responder.with_semantic(stage);
            Some(scratch)
        }
        None => None,
    };
    let now = Timestamp(u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0));
    let mut sandbox = Sandbox::new(responder, "15550009999", now, Duration::from_secs(30 * 60))?;
    sandbox.set_contact_name(contact);
    let stdin = std::io::stdin();
    writeln!(
        out,
        "tandem chat: {count} flows from {}. /help for commands.",
        flows.display()
    )?;
    let mut choices: Vec<(String, String, bool)> = Vec::new();
    loop {
        write!(out, "you> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let outcome = match line
            .split_once(' ')
            .map_or((line, ""), |(a, b)| (a, b.trim()))
        {
            ("/quit" | "/exit", _) => break,
            ("/help", _) => {
                writeln!(out, "{HELP}")?;
                continue;
            }
            ("/state", _) => {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(sandbox.conversation())?
                )?;
                continue;
            }
            ("/echo", text) => runtime.block_on(sandbox.echo(text)),
            ("/takeover", _) => {
                runtime.block_on(sandbox.agent(tandem_domain::AgentActionKind::Takeover))
            }
            ("/release", _) => {
                runtime.block_on(sandbox.agent(tandem_domain::AgentActionKind::Release))
            }
            ("/close", _) => runtime.block_on(sandbox.agent(tandem_domain::AgentActionKind::Close)),
            ("/wait", d) => match humantime::parse_duration(d) {
                Ok(d) => runtime.block_on(sandbox.wait(d)),
                Err(e) => {
                    writeln!(out, "  {d:?} is not a duration: {e}")?;
                    continue;
                }
            },
            ("/image", caption) => runtime.block_on(sandbox.customer(MessageContent::Media {
                kind: "image".into(),
                media_id: Some("chat-media".into()),
                mime_type: Some("image/jpeg".into()),
                caption: Some(caption.to_owned()).filter(|c| !c.is_empty()),
                filename: None,
            })),
            ("/location", rest) => {
                let parts: Vec<f64> = rest
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                let [latitude, longitude] = parts[..] else {
                    writeln!(out, "  /location LAT LON")?;
                    continue;
                };
                runtime.block_on(sandbox.customer(MessageContent::Location {
                    latitude,
                    longitude,
                    name: None,
                    address: None,
                }))
            }
            _ => {
                let picked = line
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| choices.get(i))
                    .cloned();
                let content = match picked {
                    Some((id, title, true)) => MessageContent::ListReply {
                        id,
                        title,
                        description: None,
                    },
                    Some((id, title, false)) => MessageContent::ButtonReply { id, title },
                    None => MessageContent::Text {
                        body: line.to_owned(),
                    },
                };
                runtime.block_on(sandbox.customer(content))
            }
        };
        show(&mut out, &outcome, &sandbox, &mut choices)?;
    }
    Ok(())
}

fn show(
    out: &mut impl Write,
    outcome: &Outcome,
    sandbox: &Sandbox,
    choices: &mut Vec<(String, String, bool)>,
) -> std::io::Result<()> {
    for reply in &outcome.replies {
        match reply {
            OutboundContent::Text { body, .. } => {
                writeln!(out, "bot> {}", body.replace('\n', "\n     "))?
            }
            OutboundContent::Buttons { body, buttons, .. } => {
                writeln!(out, "bot> {body}")?;
                *choices = buttons
                    .iter()
                    .map(|(id, title)| (id.clone(), title.clone(), false))
                    .collect();
                for (i, (_, title)) in buttons.iter().enumerate() {
                    writeln!(out, "     {}. [{title}]", i + 1)?;
                }
            }
            OutboundContent::List {
                body,
                button,
                sections,
                ..
            } => {
                writeln!(out, "bot> {body}  ({button})")?;
                *choices = sections
                    .iter()
                    .flat_map(|s| s.rows.iter())
                    .map(|r| (r.id.clone(), r.title.clone(), true))
                    .collect();
                for (i, (_, title, _)) in choices.iter().enumerate() {
                    writeln!(out, "     {}. {title}", i + 1)?;
                }
            }
            OutboundContent::Template { name, .. } => writeln!(out, "bot> (template {name})")?,
        }
    }
    for note in &outcome.not_sent {
        writeln!(out, "     (not sent: {note})")?;
    }
    let c = sandbox.conversation();
    let slots = serde_json::to_string(&c.bot.slots).unwrap_or_default();
    writeln!(
        out,
        "     · {} · mode {} · slots {slots}",
        outcome.decisions.join(" → "),
        c.mode().as_str()
    )?;
    Ok(())
}
