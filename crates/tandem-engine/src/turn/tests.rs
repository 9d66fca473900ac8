//! The decision across modes, with an explicit clock: no store, no network, no wall time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tandem_domain::{
    AgentAction, AgentActionKind, Conversation, ConversationEvent, ConversationId, Echo,
    InboundMessage, MessageContent, MessageId, Mode, OutboundContent, SendAction, SendOrigin,
    StatusUpdate, Timestamp, TranscriptEntry,
};
use tandem_flows::{Bot, CallOutcome};
use tandem_handoff::HookEvent;
use tandem_store::{InboxItem, TimerChange};

use super::*;
use crate::desk::Desk;

/// Monday 2026-01-05 09:00 UTC.
const T0: Timestamp = Timestamp(1_767_603_600_000);
const IDLE: Duration = Duration::from_secs(600);

fn bot() -> Bot {
    let files = [
        (
            "bot.yaml",
            "languages: [en]\n\
             opt_out: {keywords: [stop]}\n\
             texts: {bot_back: \"I'm back\"}\n\
             window_template: {name: follow_up, language: en}\n",
        ),
        (
            "hi.yaml",
            "id: hi\ntriggers: ['^hi$']\nsteps:\n  - say: hello\n",
        ),
        (
            "person.yaml",
            "id: person\ntriggers: ['^agent$']\nsteps:\n  - handoff: {reason: asked}\n",
        ),
        (
            "order.yaml",
            "id: order\ntriggers: ['^order$']\nsteps:\n  \
             - call: {method: POST, url: 'http://127.0.0.1:1/orders', save: order}\n  \
             - call: {url: 'http://127.0.0.1:1/orders/{{ vars.order.id }}', save: status}\n  \
             - say: \"order {{ vars.order.id }} is {{ vars.status.state }}\"\n",
        ),
    ]
    .map(|(name, text)| (name.to_owned(), text.to_owned()));
    tandem_flows::load_sources(&files, &BTreeMap::new())
        .unwrap()
        .bot
}

fn settings() -> Settings {
    Settings {
        pause: std::sync::Arc::new(tandem_domain::PauseRules::new(IDLE, IDLE)),
        transcript_cap: 50,
        burst_window: Duration::ZERO,
        send_recovery: Duration::from_secs(30),
        llm: LlmUse::default(),
        semantic: None,
        transcribe: false,
    }
}

fn record() -> Conversation {
    Conversation::new(ConversationId::parse("106:351911111111").unwrap(), T0)
}

fn item(event: ConversationEvent, at: Timestamp) -> InboxItem {
    InboxItem {
        seq: 1,
        received_at: at,
        own_echo: false,
        event,
    }
}

fn said(id: &str, body: &str, at: Timestamp) -> InboxItem {
    item(
        ConversationEvent::Customer(InboundMessage {
            id: MessageId::parse(id).unwrap(),
            sent_at: at,
            content: MessageContent::Text { body: body.into() },
            profile_name: None,
            from: tandem_domain::Identity::default(),
            context_id: None,
            forwarded: false,
        }),
        at,
    )
}

/// A person's echo as ingress applies it (the pause) and as the lane receives it.
fn echoed(c: &mut Conversation, at: Timestamp) -> InboxItem {
    let event = ConversationEvent::Echo(Echo {
        id: MessageId::parse(format!("echo.{}", at.as_millis())).unwrap(),
        sent_at: at,
        content: MessageContent::Text {
            body: "Rui here".into(),
        },
        to: tandem_domain::Identity::default(),
    });
    let pause = crate::ingress::pause_for(&event, &settings().pause).unwrap();
    tandem_store::apply_pause(c, &event, &pause, at, 50);
    item(event, at)
}

/// Decides `items` at `now` on `flows` (none: the lane only records) with the answers in
/// `journal`, and no routing.
fn decide_with(
    flows: Option<&Bot>,
    c: &Conversation,
    items: &[InboxItem],
    now: Timestamp,
    s: &Settings,
    journal: &Journal,
) -> Result<Decision, Pending> {
    let desk = Desk::default();
    let parts = Parts { flows, desk: &desk };
    let input = Input {
        items,
        contact_name: None,
        now,
    };
    decide(c.clone(), &input, &parts, s, journal)
}

/// Decides `items` at `now` with no request answered: the decision must need none.
fn decide_now(c: &Conversation, items: &[InboxItem], now: Timestamp, s: &Settings) -> Decision {
    decide_with(Some(&bot()), c, items, now, s, &Journal::default())
        .expect("a decision needing no request")
}

/// The texts queued for the customer, in order.
fn texts(c: &Conversation) -> Vec<String> {
    c.outbox
        .iter()
        .filter_map(|s| match &s.action {
            SendAction::Message {
                content: OutboundContent::Text { body, .. },
            } => Some(body.clone()),
            SendAction::Message {
                content: OutboundContent::Template { name, .. },
            } => Some(format!("template {name}")),
            _ => None,
        })
        .collect()
}

fn events(d: &Decision) -> Vec<HookEvent> {
    d.effects.happenings.iter().map(|h| h.event).collect()
}

#[test]
fn in_bot_mode_a_message_is_answered_and_the_sender_is_woken() {
    let d = decide_now(&record(), &[said("m1", "hi", T0)], T0, &settings());
    assert_eq!(d.conversation.mode(), Mode::Bot);
    assert_eq!(texts(&d.conversation), ["hello"]);
    assert!(
        matches!(d.conversation.outbox[0].action, SendAction::MarkRead { .. }),
        "read first, with the typing indicator"
    );
    assert_eq!(
        d.effects.notes,
        [
            Note::Session,
            Note::Classified("rules"),
            Note::Turn(TurnEnd::Reply)
        ]
    );
    assert_eq!(
        d.timer,
        TimerChange::Set(T0.plus(Duration::from_secs(30))),
        "the outbox is looked at again should the sender not drain it"
    );
    assert!(d.effects.happenings.is_empty());
}

#[test]
fn a_handoff_goes_to_the_queue_and_is_announced() {
    let d = decide_now(&record(), &[said("m1", "agent", T0)], T0, &settings());
    assert_eq!(d.conversation.mode(), Mode::Handoff);
    assert_eq!(events(&d), [HookEvent::HandoffRequested]);
    assert!(
        d.effects.notes.contains(&Note::Handoff("customer_request")),
        "{:?}",
        d.effects.notes
    );
    assert!(d.effects.notes.contains(&Note::Turn(TurnEnd::Handoff)));
    assert!(d.queue_changed(), "the router looks at once");
    // While a person is awaited the bot is silent and the CRM hears the customer.
    let later = T0.plus(Duration::from_secs(5));
    let next = decide_now(
        &d.conversation,
        &[said("m2", "hi", later)],
        later,
        &settings(),
    );
    assert_eq!(texts(&next.conversation), texts(&d.conversation));
    assert_eq!(events(&next), [HookEvent::Message]);
}

#[test]
fn an_echo_pauses_the_bot_until_the_person_is_quiet_for_the_idle_time() {
    let mut c = decide_now(&record(), &[said("m1", "hi", T0)], T0, &settings()).conversation;
    c.outbox.clear();
    let at = T0.plus(Duration::from_secs(10));
    let echo = echoed(&mut c, at);
    let paused = decide_now(&c, &[echo], at, &settings());
    assert_eq!(paused.conversation.mode(), Mode::Human);
    assert_eq!(events(&paused), [HookEvent::HumanTakeover]);
    let resume_at = at.plus(IDLE);
    assert_eq!(paused.timer, TimerChange::Set(resume_at));
    // The customer writes meanwhile: no bot answer, the CRM is told.
    let during = at.plus(Duration::from_secs(60));
    let quiet = decide_now(
        &paused.conversation,
        &[said("m2", "hi", during)],
        during,
        &settings(),
    );
    assert!(texts(&quiet.conversation).is_empty());
    assert_eq!(events(&quiet), [HookEvent::Message]);
    assert_eq!(quiet.timer, TimerChange::Set(resume_at));
    // The timer fires a second early: still paused, the timer stays.
    let early = Timestamp(resume_at.as_millis() - 1_000);
    let idle = item(ConversationEvent::IdleCheck, early);
    let not_yet = decide_now(&quiet.conversation, &[idle], early, &settings());
    assert_eq!(not_yet.conversation.mode(), Mode::Human);
    assert_eq!(not_yet.timer, TimerChange::Set(resume_at));
    // On time: the bot resumes, says it is back once, and the CRM is told.
    let idle = item(ConversationEvent::IdleCheck, resume_at);
    let back = decide_now(&quiet.conversation, &[idle], resume_at, &settings());
    assert_eq!(back.conversation.mode(), Mode::Bot);
    assert_eq!(texts(&back.conversation), ["I'm back"]);
    assert_eq!(events(&back), [HookEvent::Resumed]);
    assert_eq!(back.effects.notes, [Note::Resumed(Resumed::HumanIdle)]);
}

#[test]
fn an_agents_release_resumes_and_a_take_over_is_announced_once() {
    let mut c = record();
    let takeover = |c: &mut Conversation, at: Timestamp| {
        let event = ConversationEvent::Agent(AgentAction {
            agent: Some("ana".into()),
            at,
            kind: AgentActionKind::Takeover,
        });
        let pause = crate::ingress::pause_for(&event, &settings().pause).unwrap();
        tandem_store::apply_pause(c, &event, &pause, at, 50);
        item(event, at)
    };
    let first = takeover(&mut c, T0);
    let taken = decide_now(&c, &[first], T0, &settings());
    assert_eq!(events(&taken), [HookEvent::HumanTakeover]);
    let mut c = taken.conversation;
    let at = T0.plus(Duration::from_secs(1));
    let again = takeover(&mut c, at);
    let twice = decide_now(&c, &[again], at, &settings());
    assert!(
        events(&twice).is_empty(),
        "announced once per human stretch"
    );
    let release = item(
        ConversationEvent::Agent(AgentAction {
            agent: Some("ana".into()),
            at,
            kind: AgentActionKind::Release,
        }),
        at,
    );
    let released = decide_now(&twice.conversation, &[release], at, &settings());
    assert_eq!(released.conversation.mode(), Mode::Bot);
    assert_eq!(events(&released), [HookEvent::Resumed]);
    assert!(
        released
            .effects
            .notes
            .contains(&Note::Resumed(Resumed::Released))
    );
    // The customer never wrote: their window is closed, so no "I'm back".
    assert!(texts(&released.conversation).is_empty());
}

#[test]
fn a_burst_is_answered_once_when_its_window_passes() {
    let s = Settings {
        burst_window: Duration::from_secs(3),
        ..settings()
    };
    let held = decide_now(&record(), &[said("m1", "hello there", T0)], T0, &s);
    assert!(
        held.conversation.outbox.is_empty(),
        "the customer may go on"
    );
    assert_eq!(
        held.timer,
        TimerChange::Set(T0.plus(Duration::from_secs(3)))
    );
    let t1 = T0.plus(Duration::from_secs(2));
    let more = decide_now(&held.conversation, &[said("m2", "hi", t1)], t1, &s);
    let due = t1.plus(Duration::from_secs(3));
    assert_eq!(
        more.timer,
        TimerChange::Set(due),
        "each text moves the window"
    );
    let fired = decide_now(
        &more.conversation,
        &[item(ConversationEvent::IdleCheck, due)],
        due,
        &s,
    );
    assert_eq!(texts(&fired.conversation), ["hello"], "one turn for both");
    let reads = fired
        .conversation
        .outbox
        .iter()
        .filter(|p| matches!(&p.action, SendAction::MarkRead { message_id } if message_id.as_str() == "m2"))
        .count();
    assert_eq!(reads, 1, "the latest message is marked read");
    assert!(fired.conversation.bot.burst.is_none());
}

#[test]
fn a_send_refused_for_a_closed_window_queues_the_window_template_once() {
    let mut c = decide_now(&record(), &[said("m1", "hi", T0)], T0, &settings()).conversation;
    c.outbox.clear();
    let wamid = MessageId::parse("wamid.out.1").unwrap();
    c.push(
        TranscriptEntry::sent(
            T0,
            tandem_domain::Role::Bot,
            wamid.clone(),
            &OutboundContent::Text {
                body: "hello".into(),
                preview_url: false,
            },
        ),
        50,
    );
    let failed = item(
        ConversationEvent::Status(StatusUpdate {
            message_id: wamid,
            status: tandem_domain::DeliveryStatus::Failed,
            status_raw: "failed".into(),
            at: T0,
            error_codes: vec![131_047],
            callback_data: None,
            recipient: tandem_domain::Identity::default(),
        }),
        T0,
    );
    let d = decide_now(&c, &[failed], T0, &settings());
    assert_eq!(texts(&d.conversation), ["template follow_up"]);
    assert_eq!(d.conversation.outbox[0].origin, SendOrigin::Bot);
}

#[test]
fn an_opted_out_customer_gets_the_confirmation_and_then_nothing() {
    let out = decide_now(&record(), &[said("m1", "stop", T0)], T0, &settings());
    assert!(out.conversation.opted_out);
    let origins: Vec<SendOrigin> = out
        .conversation
        .outbox
        .iter()
        .filter(|p| matches!(p.action, SendAction::Message { .. }))
        .map(|p| p.origin)
        .collect();
    assert_eq!(origins, [SendOrigin::OptOutNotice]);
    let mut c = out.conversation;
    c.outbox.clear();
    let later = T0.plus(Duration::from_secs(5));
    let after = decide_now(&c, &[said("m2", "hi", later)], later, &settings());
    assert!(
        texts(&after.conversation).is_empty(),
        "{:?}",
        after.conversation.outbox
    );
}

#[test]
fn calls_are_requests_answered_through_the_journal_with_stable_keys() {
    let bot = bot();
    let c = record();
    let items = [said("m1", "order", T0)];
    let s = settings();
    let order = |journal: &Journal| decide_with(Some(&bot), &c, &items, T0, &s, journal);
    let mut journal = Journal::default();
    let mut keys = Vec::new();
    let answers = [json!({"id": "A7"}), json!({"state": "shipped"})];
    for body in answers {
        let pending = order(&journal).unwrap_err();
        // Asked again with the same journal, the decision asks the same.
        assert_eq!(order(&journal).unwrap_err(), pending);
        let Request::Call { key, .. } = pending.request.as_ref() else {
            panic!("a call: {pending:?}");
        };
        keys.push(key.clone());
        journal.answer(
            pending,
            Answer::Call(CallOutcome::Answered { status: 200, body }),
        );
    }
    let decision = order(&journal).unwrap();
    assert_eq!(texts(&decision.conversation), ["order A7 is shipped"]);
    assert_eq!(
        keys,
        [
            "tandem-106:351911111111-m1-1",
            "tandem-106:351911111111-m1-2"
        ]
    );
    assert_eq!(
        order(&journal).unwrap(),
        decision,
        "the same input and answers give the same decision"
    );
}

#[test]
fn a_failed_call_and_a_failed_triage_take_the_fallback_paths() {
    let bot = bot();
    let c = record();
    let s = settings_with_llm();
    // An unknown text goes to the LLM; its failure falls back to the fallback text.
    let items = [said("m1", "do you sell cacti", T0)];
    let mut journal = Journal::default();
    let pending = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap_err();
    assert!(
        matches!(pending.request.as_ref(), Request::Triage { text, .. } if text == "do you sell cacti")
    );
    journal.answer(pending, Answer::Triage(Err("unusable answer".into())));
    let d = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap();
    assert_eq!(d.conversation.mode(), Mode::Bot);
    assert_eq!(texts(&d.conversation).len(), 1, "the fallback");
    assert!(
        d.effects
            .decisions
            .iter()
            .any(|line| line.contains("llm failed (unusable answer): fallback")),
        "{:?}",
        d.effects.decisions
    );
    // A call that gets no answer ends the flow with the fallback and a flow error noted.
    let items = [said("m2", "order", T0)];
    let mut journal = Journal::default();
    let pending = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap_err();
    journal.answer(pending, Answer::Call(CallOutcome::Failed("timeout".into())));
    let d = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap();
    assert_eq!(d.conversation.mode(), Mode::Bot);
    assert!(!texts(&d.conversation).is_empty());
}

#[test]
fn without_flows_the_lane_only_records() {
    let c = record();
    let items = [said("m1", "hi", T0)];
    let d = decide_with(None, &c, &items, T0, &settings(), &Journal::default()).unwrap();
    assert_eq!(d.conversation.transcript.len(), 1);
    assert!(d.conversation.outbox.is_empty());
    assert_eq!(d.timer, TimerChange::Keep);
    assert!(d.effects.notes.is_empty());
}

#[test]
fn several_events_decide_as_they_would_one_by_one() {
    // A person's pause, then a message, the idle check that resumes, another message.
    let mut c = record();
    let echo = echoed(&mut c, Timestamp(0));
    let late = Timestamp(0).plus(IDLE);
    let items = [
        echo,
        said("m1", "hi", Timestamp(1_000)),
        item(ConversationEvent::IdleCheck, late),
        said("m2", "again", late),
    ];
    let s = settings();
    let together = decide_with(None, &c, &items, late, &s, &Journal::default()).unwrap();
    let mut one_by_one = c;
    let mut timer = TimerChange::Keep;
    let mut notes = Vec::new();
    for i in &items {
        let d = decide_with(
            None,
            &one_by_one,
            std::slice::from_ref(i),
            late,
            &s,
            &Journal::default(),
        )
        .unwrap();
        one_by_one = d.conversation;
        if d.timer != TimerChange::Keep {
            timer = d.timer;
        }
        notes.extend(d.effects.notes);
    }
    assert_eq!(together.conversation, one_by_one);
    assert_eq!(together.timer, timer);
    assert_eq!(
        together.timer,
        TimerChange::Clear,
        "the idle check resumed the bot"
    );
    assert_eq!(together.effects.notes, notes);
    assert_eq!(together.effects.notes, [Note::Resumed(Resumed::HumanIdle)]);
    assert_eq!(together.conversation.mode(), Mode::Bot);
    assert_eq!(together.conversation.events_applied, 4);
}

#[test]
fn the_semantic_stage_is_asked_before_the_llm_and_its_failure_goes_on_to_it() {
    let bot = bot();
    let c = record();
    let s = Settings {
        semantic: Some(0.95),
        ..settings_with_llm()
    };
    let items = [said("m1", "good morning to you", T0)];
    let sure = |intent: &str, sure: bool| {
        Answer::Semantic(Ok(tandem_classify::semantic::SemanticMatch {
            intent: intent.to_owned(),
            confidence: if sure { 0.9 } else { 0.4 },
            semantic: 0.9,
            sure,
        }))
    };
    // Sure: the flow runs, no LLM call.
    let mut journal = Journal::default();
    let pending = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap_err();
    assert!(matches!(
        pending.request.as_ref(),
        Request::Semantic { text } if text == "good morning to you"
    ));
    journal.answer(pending, sure("hi", true));
    let d = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap();
    assert_eq!(texts(&d.conversation), ["hello"]);
    assert!(d.effects.notes.contains(&Note::Classified("semantic")));
    let line = d.conversation.transcript.first().unwrap();
    let understood = line.understood.as_ref().unwrap();
    assert_eq!(
        (understood.stage.as_str(), understood.intent.as_deref()),
        ("semantic", Some("hi"))
    );
    // Unsure, failed, or naming a flow that no longer exists: the LLM is asked next.
    for answer in [
        sure("hi", false),
        Answer::Semantic(Err("no vector within 500ms".into())),
        sure("gone", true),
    ] {
        let mut journal = Journal::default();
        let pending = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap_err();
        journal.answer(pending, answer.clone());
        let pending = decide_with(Some(&bot), &c, &items, T0, &s, &journal).unwrap_err();
        assert!(
            matches!(pending.request.as_ref(), Request::Triage { .. }),
            "{answer:?}"
        );
    }
    // Without the stage, nothing is asked of it.
    let pending = decide_with(
        Some(&bot),
        &c,
        &items,
        T0,
        &settings_with_llm(),
        &Journal::default(),
    )
    .unwrap_err();
    assert!(matches!(pending.request.as_ref(), Request::Triage { .. }));
}

fn settings_with_llm() -> Settings {
    Settings {
        llm: LlmUse {
            triage: true,
            ..LlmUse::default()
        },
        ..settings()
    }
}

/// A customer's voice note `media_id`, sent at `at`.
fn spoke(id: &str, media_id: &str, at: Timestamp) -> InboxItem {
    item(
        ConversationEvent::Customer(InboundMessage {
            id: MessageId::parse(id).unwrap(),
            sent_at: at,
            content: MessageContent::Media {
                kind: "audio".into(),
                media_id: Some(media_id.into()),
                mime_type: Some("audio/ogg; codecs=opus".into()),
                caption: None,
                filename: None,
            },
            profile_name: None,
            from: tandem_domain::Identity::default(),
            context_id: None,
            forwarded: false,
        }),
        at,
    )
}

/// Decides `items` on `bot`, answering the transcription of the voice note `media_id` with
/// `heard`; the decision must need nothing else.
fn decide_heard(
    bot: &Bot,
    c: &Conversation,
    items: &[InboxItem],
    media_id: &str,
    heard: Result<&str, &str>,
) -> Decision {
    let s = Settings {
        transcribe: true,
        ..settings()
    };
    let mut journal = Journal::default();
    let pending = decide_with(Some(bot), c, items, T0, &s, &journal).unwrap_err();
    assert_eq!(
        *pending.request,
        Request::Transcribe {
            media_id: media_id.into(),
            mime_type: Some("audio/ogg; codecs=opus".into()),
            language: c.language.clone(),
        }
    );
    let answer = heard.map(str::to_owned).map_err(str::to_owned);
    journal.answer(pending, Answer::Transcript(answer));
    decide_with(Some(bot), c, items, T0, &s, &journal).expect("nothing more to ask")
}

#[test]
fn a_voice_note_goes_on_as_its_words_and_its_line_keeps_audio_and_words() {
    let bot = bot();
    let items = [spoke("m1", "media-1", T0)];
    let d = decide_heard(&bot, &record(), &items, "media-1", Ok("hi"));
    assert_eq!(texts(&d.conversation), ["hello"], "the `hi` flow answered");
    let line = d.conversation.transcript.first().unwrap();
    assert_eq!(line.kind, "media");
    assert_eq!(line.media_id.as_deref(), Some("media-1"));
    assert_eq!(line.transcription.as_deref(), Some("hi"));
    assert_eq!(line.text, "[audio] hi");
    assert_eq!(
        line.understood.as_ref().map(|u| u.intent.as_deref()),
        Some(Some("hi"))
    );
    // Without a transcriber the same voice note is an attachment, and nothing is asked.
    let plain = decide_now(&record(), &items, T0, &settings());
    let attachment = texts(&plain.conversation);
    assert!(!attachment.is_empty());
    assert_ne!(attachment, ["hello"]);
    assert_eq!(
        plain.conversation.transcript[0].media_id.as_deref(),
        Some("media-1")
    );
    assert_eq!(plain.conversation.transcript[0].transcription, None);
    // A failed transcription gives that same attachment answer. (A conversation whose
    // language is known passes it on as the transcriber's hint: `decide_heard` checks.)
    let mut portuguese = record();
    portuguese.language = Some("pt".into());
    let failed = decide_heard(&bot, &portuguese, &items, "media-1", Err("timed out"));
    assert_eq!(texts(&failed.conversation), attachment);
    assert_eq!(failed.conversation.transcript[0].text, "[audio]");
    assert!(
        failed
            .effects
            .decisions
            .iter()
            .any(|d| d.contains("not transcribed: timed out")),
        "{:?}",
        failed.effects.decisions
    );
}

#[test]
fn a_question_for_media_takes_the_audio_and_a_question_for_text_takes_the_words() {
    let files = [
        ("bot.yaml", "languages: [en]\n"),
        (
            "memo.yaml",
            "id: memo\ntriggers: ['^memo$']\nslots: {memo: {description: a note}}\nsteps:\n  \
             - ask: What should I note?\n    slot: memo\n    expect: text\n  \
             - say: \"noted: {{ slots.memo }}\"\n",
        ),
        (
            "recording.yaml",
            "id: recording\ntriggers: ['^record$']\nslots: {clip: {description: a clip}}\nsteps:\n  \
             - ask: Send the recording\n    slot: clip\n    expect: media\n  \
             - say: \"got {{ slots.clip.kind }} {{ slots.clip.media_id }}\"\n",
        ),
    ]
    .map(|(name, text)| (name.to_owned(), text.to_owned()));
    let bot = tandem_flows::load_sources(&files, &BTreeMap::new())
        .unwrap()
        .bot;
    let after = |trigger: &str| {
        decide_with(
            Some(&bot),
            &record(),
            &[said("m0", trigger, T0)],
            T0,
            &settings(),
            &Journal::default(),
        )
        .unwrap()
        .conversation
    };
    // The flow started by `trigger`, then a voice note `media_id` heard as `words`.
    let spoken_after = |trigger: &str, media_id: &str, words: &str| {
        let waiting = after(trigger);
        decide_heard(
            &bot,
            &waiting,
            &[spoke("m1", media_id, T0)],
            media_id,
            Ok(words),
        )
    };
    let d = spoken_after("memo", "media-2", "buy more soil");
    assert_eq!(
        texts(&d.conversation).last().map(String::as_str),
        Some("noted: buy more soil")
    );
    let d = spoken_after("record", "media-3", "this is the sound it makes");
    assert_eq!(
        texts(&d.conversation).last().map(String::as_str),
        Some("got audio media-3"),
        "the audio itself answered the question"
    );
    let line = d
        .conversation
        .transcript
        .iter()
        .rev()
        .find(|l| l.kind == "media");
    assert_eq!(
        line.and_then(|l| l.transcription.as_deref()),
        Some("this is the sound it makes"),
        "and its words are still kept for the people reading"
    );
}

#[test]
fn agents_and_hooks_see_the_words_of_a_voice_note_while_a_person_is_in_charge() {
    let mut c = record();
    let echo = echoed(&mut c, T0);
    let items = [echo, spoke("m1", "media-4", T0)];
    let d = decide_heard(&bot(), &c, &items, "media-4", Ok("are you there?"));
    assert!(texts(&d.conversation).is_empty(), "the bot stays quiet");
    let hook = d
        .effects
        .happenings
        .iter()
        .find(|h| h.event == HookEvent::Message)
        .expect("a message hook");
    assert_eq!(hook.detail["message"]["transcription"], "are you there?");
    assert_eq!(hook.detail["message"]["text"], "[audio] are you there?");
    assert_eq!(hook.detail["message"]["type"], "media");
}
