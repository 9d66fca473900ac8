//! Building and running the application: store, engine, listener, routes, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tandem_domain::{Clock, SystemClock};
use tandem_engine::{
    Desk, Dispatcher, FlowsHandle, HookSender, Ingress, LaneParts, Responder, SendPolicy, Sender,
};
use tandem_handoff::Hooks;
use tandem_store::Store;
use tandem_whatsapp::GraphClient;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::routes::{AppState, health, openapi, webhook};

/// A built server: the store is open, the engine runs and the listener is bound.
pub struct Application {
    listener: TcpListener,
    router: Router,
    dispatcher: Dispatcher,
    settings: Settings,
}

/// What `/readyz`, `GET /v1/numbers` and the start-up log say without an access token.
const NO_ACCESS_TOKEN: &str =
    "no TANDEM_ACCESS_TOKEN: events are stored, but no reply or agent message can be sent";

/// Builds the router over a state. Exposed so tests can serve it without a real socket.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let v1 = openapi::v1_router(&state);
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .route("/webhook", get(webhook::handshake).post(webhook::receive))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/v1", v1)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
                // The path names customers (a phone, a BSUID): logs get a digest instead.
                let path = crate::routes::privacy::loggable_path(request.uri().path());
                tracing::debug_span!("request", method = %request.method(), %path)
            }),
        )
        .with_state(state)
}

impl Application {
    /// Opens the store, starts the engine and binds the listener.
    ///
    /// # Errors
    /// Fails when the store cannot be opened or the address cannot be bound.
    pub async fn build(
        settings: Settings,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = tandem_store::open(&settings.store_url, settings.store.clone())
            .await
            .with_context(|| format!("opening the store {}", redact(&settings.store_url)))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let flows = match &settings.flows_dir {
            Some(dir) => {
                let loaded =
                    tandem_flows::load_dir(dir, &settings.flow_variables).map_err(|e| {
                        anyhow::anyhow!("the flows in {} are invalid:\n{e}", dir.display())
                    })?;
                for warning in &loaded.warnings {
                    tracing::warn!(%warning, "flow warning");
                }
                tracing::info!(dir = %dir.display(), flows = loaded.bot.flows.len(), "flows loaded");
                Some(FlowsHandle::new(loaded.bot))
            }
            None => {
                tracing::warn!(
                    "no flows directory: events are recorded but the bot does not answer"
                );
                None
            }
        };
        if settings.access_token.is_none() {
            tracing::warn!("{NO_ACCESS_TOKEN}; set it (or TANDEM_ACCESS_TOKEN_FILE) to send");
        }
        let token = settings
            .access_token
            .clone()
            .unwrap_or_else(|| SecretString::from(String::new()));
        let graph = GraphClient::new(&settings.graph_url, token, settings.send_timeout)
            .context("building the Graph API client")?;
        let policy = SendPolicy {
            per_second: settings.engine.send_rate,
            max_attempts: settings.engine.send_attempts,
            base_backoff: settings.engine.send_backoff,
            max_backoff: std::time::Duration::from_secs(300),
            recovery: settings.engine.send_recovery,
            transcript_cap: settings.engine.transcript_cap,
            hold_retry: settings.engine.hold_retry,
            authentication_templates: settings.engine.authentication_templates.clone(),
        };
        let links = tandem_engine::sender::LinkCache::default();
        let sender = Sender::new(
            Arc::clone(&store),
            graph.clone(),
            flows.clone(),
            policy,
            Arc::clone(&clock),
        )
        .with_links(links.clone());
        let llm = match &settings.llm {
            Some(llm) => Some(llm_classifier(llm, &settings.prompts_dir)?),
            None => None,
        };
        let responder = match &flows {
            Some(handle) => {
                let responder = Responder::new(
                    handle.clone(),
                    tandem_engine::responder::call_client()
                        .context("building the HTTP client of call steps")?,
                );
                Some(match llm {
                    Some(llm) => responder.with_llm(llm),
                    None => responder,
                })
            }
            None => None,
        };
        let routing = Arc::new(settings.routing.clone());
        let hooks = Arc::new(Hooks::new(
            settings.hooks.clone(),
            settings.engine.hook_transcript,
        ));
        let ingress = Ingress::new(
            Arc::clone(&store),
            Arc::new(routing.pause_rules(settings.engine.human_idle)),
        );
        let hook_sender = if hooks.is_empty() {
            None
        } else {
            Some(
                HookSender::new(
                    Arc::clone(&store),
                    Arc::clone(&hooks),
                    tandem_engine::hook_sender::client()
                        .context("building the HTTP client of hooks")?,
                    Arc::clone(&clock),
                    settings.engine.clone(),
                )
                .with_replies(ingress.clone()),
            )
        };
        let dispatcher = Dispatcher::start(
            Arc::clone(&store),
            settings.engine.clone(),
            Arc::clone(&clock),
            LaneParts {
                responder,
                sender: Some(sender),
                desk: Desk {
                    routing: Arc::clone(&routing),
                    hooks: Arc::clone(&hooks),
                },
                hooks_ready: Arc::default(),
                routing_ready: Arc::default(),
                monitor: Some(Arc::new(
                    tandem_engine::health::Monitor::new(
                        Arc::clone(&store),
                        Arc::clone(&hooks),
                        Some(graph.clone()),
                        Arc::clone(&clock),
                        settings.health.clone(),
                    )
                    .with_links(links),
                )),
                hook_sender,
            },
        );
        if let (Some(handle), Some(dir)) = (flows.clone(), settings.flows_dir.clone()) {
            spawn_reload_on_sighup(handle, dir, settings.flow_variables.clone());
        }
        let state = AppState {
            ingress,
            store,
            clock,
            app_secret: settings.app_secret_bytes().map(Arc::from),
            verify_token: settings.verify_token.clone().map(Arc::new),
            api_tokens: Arc::new(settings.api_tokens.clone()),
            api_limiter: std::num::NonZeroU32::new(settings.api_rate_limit).map(|rate| {
                Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(
                    rate,
                )))
            }),
            routing,
            hooks: Arc::clone(&hooks),
            onboarding: Arc::new(crate::routes::Onboarding {
                graph: graph.clone(),
                app_id: settings.app_id.clone(),
                app_secret: settings.app_secret.clone(),
                access_token: settings.access_token.clone(),
            }),
            flows: flows.clone(),
            send_rate: settings.engine.send_rate,
            sending_problem: settings.access_token.is_none().then_some(NO_ACCESS_TOKEN),
            authentication_templates: Arc::new(settings.engine.authentication_templates.clone()),
            metrics,
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let router = router(state, settings.max_body_bytes);
        Ok(Self {
            listener,
            router,
            dispatcher,
            settings,
        })
    }

    /// Returns the bound address (the real port when 0 was asked for).
    ///
    /// # Errors
    /// Fails when the socket has no local address.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the bound address")
    }

    /// Serves until `shutdown` resolves, then stops the engine within the grace period.
    ///
    /// # Errors
    /// Fails when the server stops on an IO error.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let served = crate::serve::serve(
            self.listener,
            self.router,
            self.settings.connection_limits,
            self.settings.shutdown_grace,
            shutdown,
        )
        .await;
        self.dispatcher.shutdown(self.settings.shutdown_grace).await;
        served.context("serving HTTP")
    }
}

/// Builds the LLM stage from its settings and `prompts_dir/classify.j2` (plus
/// `handoff_summary.j2` when present).
///
/// # Errors
/// A prompt that cannot be read or compiled, or a client that cannot be built.
pub fn llm_classifier(
    llm: &crate::config::LlmSettings,
    prompts_dir: &std::path::Path,
) -> anyhow::Result<Arc<tandem_classify::llm::LlmClassifier>> {
    let path = prompts_dir.join("classify.j2");
    let prompt = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the classifier prompt {}", path.display()))?;
    let mut config = tandem_classify::llm::LlmConfig::new(&llm.base_url, &llm.model);
    if let Some(key) = &llm.api_key {
        config.api_key = key.clone();
    }
    config.timeout = llm.timeout;
    config.structured_output = llm.structured_output;
    config.concurrency = llm.concurrency;
    let mut classifier = tandem_classify::llm::LlmClassifier::new(config, prompt)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // The handoff summary is optional: without its prompt, hooks carry no summary.
    let summary = prompts_dir.join("handoff_summary.j2");
    if summary.exists() {
        let prompt = std::fs::read_to_string(&summary)
            .with_context(|| format!("reading the handoff summary prompt {}", summary.display()))?;
        classifier = classifier
            .with_summary_prompt(prompt)
            .map_err(|e| anyhow::anyhow!("{}: {e}", summary.display()))?;
    }
    // The slot extraction is optional too: without its prompt, refused answers are refused.
    let extract = prompts_dir.join("extract_slot.j2");
    if extract.exists() {
        let prompt = std::fs::read_to_string(&extract)
            .with_context(|| format!("reading the slot extraction prompt {}", extract.display()))?;
        classifier = classifier
            .with_extract_prompt(prompt)
            .map_err(|e| anyhow::anyhow!("{}: {e}", extract.display()))?;
    }
    tracing::info!(base_url = %llm.base_url, model = %llm.model, summary = summary.exists(), extract = extract.exists(), "LLM stage on");
    Ok(Arc::new(classifier))
}

/// How often the flows directory is looked at for changes.
const FLOWS_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the flows on SIGHUP and when a file in the directory changes; invalid new flows
/// are reported and the running ones kept.
fn spawn_reload_on_sighup(
    handle: FlowsHandle,
    dir: std::path::PathBuf,
    variables: std::collections::BTreeMap<String, String>,
) {
    let watched_dir = dir.clone();
    let dir_fingerprint = move || fingerprint(&watched_dir);
    let reload_now = move |why: &str, handle: &FlowsHandle| match reload(handle, &dir, &variables) {
        Ok(count) => {
            ::metrics::counter!(crate::metrics::FLOW_RELOADS, "outcome" => "ok").increment(1);
            tracing::info!(flows = count, why, "flows reloaded");
        }
        Err(error) => {
            ::metrics::counter!(crate::metrics::FLOW_RELOADS, "outcome" => "refused").increment(1);
            tracing::error!(why, %error, "flows not reloaded: the running flows stay in force");
        }
    };
    let watched = handle;
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangups = {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP; flows reload on file changes only");
                    None
                }
            }
        };
        let mut last = dir_fingerprint();
        let mut tick = tokio::time::interval(FLOWS_POLL);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                got = hangup => {
                    if got.is_none() {
                        return;
                    }
                    last = dir_fingerprint();
                    reload_now("SIGHUP", &watched);
                }
                _ = tick.tick() => {
                    let now = dir_fingerprint();
                    if now != last {
                        last = now;
                        reload_now("file change", &watched);
                    }
                }
            }
        }
    });
}

/// Names, sizes and modification times of the YAML files in `dir`: changes when a flow file
/// is added, removed or edited.
fn fingerprint(
    dir: &std::path::Path,
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml")
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// Loads the flows in `dir` and puts them in force when they are valid; returns how many.
///
/// # Errors
/// The load error; the flows in force are unchanged.
pub fn reload(
    handle: &FlowsHandle,
    dir: &std::path::Path,
    variables: &std::collections::BTreeMap<String, String>,
) -> Result<usize, tandem_flows::LoadError> {
    let loaded = tandem_flows::load_dir(dir, variables)?;
    let count = loaded.bot.flows.len();
    handle.replace(loaded.bot);
    Ok(count)
}

/// Hides a password in a Redis URL before it is logged.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("redis://:pw@host:6379"),
            "redis://***@host:6379"
        );
        assert_eq!(super::redact("data/tandem.redb"), "data/tandem.redb");
    }
}
