//! The engine's configuration section.

use std::time::Duration;

use serde::Deserialize;

/// How the engine behaves; the `[engine]` section of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How long the bot stays paused after the last message a person sent from the phone.
    #[serde(with = "humantime_serde")]
    pub human_idle: Duration,
    /// How many conversation lanes this process runs at once; 0 makes it an ingest-only node.
    pub workers: usize,
    /// How long a worker owns a lane before another may take it over (renewed by every
    /// step), so a crashed replica's lanes are taken over within this time.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often due idle timers are looked for.
    #[serde(with = "humantime_serde")]
    pub timer_tick: Duration,
    /// How often an idle worker looks for work it was not told about (other replicas' events).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// How many events a worker applies in one lane before giving others a turn.
    pub lane_budget: usize,
    /// How many transcript lines a conversation keeps.
    pub transcript_cap: usize,
    /// Messages a second the bot sends per business number (Coexistence numbers: 20 at
    /// most, 5 to be careful); shared by every replica on one store.
    pub send_rate: u32,
    /// Attempts before a message that keeps failing is given up (and noted in the
    /// transcript).
    pub send_attempts: u32,
    /// The first retry delay of a failed send; doubled each attempt up to 5 minutes.
    #[serde(with = "humantime_serde")]
    pub send_backoff: Duration,
    /// Sends left waiting (a crashed process) are picked up again after this long.
    #[serde(with = "humantime_serde")]
    pub send_recovery: Duration,
    /// Attempts of a hook delivery before it goes to the hook dead-letter list.
    pub hook_attempts: u32,
    /// The first retry delay of a failed hook delivery; doubled each attempt up to 10 minutes.
    #[serde(with = "humantime_serde")]
    pub hook_backoff: Duration,
    /// How long a hook receiver has to answer.
    #[serde(with = "humantime_serde")]
    pub hook_timeout: Duration,
    /// Transcript lines a hook payload carries.
    pub hook_transcript: usize,
    /// How often the router looks at the waiting queue.
    #[serde(with = "humantime_serde")]
    pub router_tick: Duration,
    /// While a number is disconnected, its held sends are looked at again this often.
    #[serde(with = "humantime_serde")]
    pub hold_retry: Duration,
    /// Customer text messages arriving within this time of each other are answered as one
    /// turn (classified once, answered once), at most four windows after the first. 0 = off.
    #[serde(with = "humantime_serde")]
    pub burst_window: Duration,
    /// Names of the business's authentication templates (one-tap, zero-tap, copy-code).
    /// WhatsApp cannot deliver them to a customer known only by a BSUID (error 131062), so
    /// Tandem refuses such a send before making it and says why in the transcript.
    pub authentication_templates: Vec<String>,
    /// How long customers' data is kept (`[retention]`); off by default.
    #[serde(skip)]
    pub retention: crate::privacy::Retention,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            human_idle: Duration::from_secs(30 * 60),
            workers: 8,
            lease: Duration::from_secs(15),
            timer_tick: Duration::from_millis(250),
            poll: Duration::from_millis(100),
            lane_budget: 64,
            transcript_cap: 200,
            send_rate: 20,
            send_attempts: 6,
            send_backoff: Duration::from_secs(1),
            send_recovery: Duration::from_secs(30),
            hook_attempts: 10,
            hook_backoff: Duration::from_secs(2),
            hook_timeout: Duration::from_secs(10),
            hook_transcript: 20,
            router_tick: Duration::from_millis(500),
            hold_retry: Duration::from_secs(10),
            burst_window: Duration::ZERO,
            authentication_templates: Vec::new(),
            retention: crate::privacy::Retention::default(),
        }
    }
}

impl EngineConfig {
    /// Checks the values; returns the first problem as `(key, what is wrong)`.
    ///
    /// # Errors
    /// Names the offending key under `engine.`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.human_idle.is_zero() {
            return Err(("engine.human_idle", "must be longer than zero".into()));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(("engine.lease", "must be at least 1s".into()));
        }
        if self.timer_tick.is_zero() || self.poll.is_zero() {
            return Err((
                "engine.timer_tick",
                "timer_tick and poll must be longer than zero".into(),
            ));
        }
        if self.lane_budget == 0 {
            return Err(("engine.lane_budget", "must be at least 1".into()));
        }
        if !(1..=1000).contains(&self.send_rate) {
            return Err((
                "engine.send_rate",
                "must be between 1 and 1000 messages a second".into(),
            ));
        }
        if self.send_attempts == 0 {
            return Err(("engine.send_attempts", "must be at least 1".into()));
        }
        if self.send_recovery < self.lease {
            return Err((
                "engine.send_recovery",
                "must be at least engine.lease".into(),
            ));
        }
        if self.hook_attempts == 0 {
            return Err(("engine.hook_attempts", "must be at least 1".into()));
        }
        if self.hook_timeout.is_zero() || self.router_tick.is_zero() {
            return Err((
                "engine.hook_timeout",
                "hook_timeout and router_tick must be longer than zero".into(),
            ));
        }
        if self.transcript_cap == 0 {
            return Err(("engine.transcript_cap", "must be at least 1".into()));
        }
        Ok(())
    }
}
