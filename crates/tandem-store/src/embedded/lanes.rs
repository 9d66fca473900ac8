//! Which conversations have waiting events and who holds their lanes, for one process.
//!
//! The embedded store belongs to one process (redb locks its file), so lane ownership lives
//! in memory. It is rebuilt from the inbox table at start-up, so nothing depends on it
//! surviving a crash.

use std::collections::{HashMap, HashSet, VecDeque};

use tandem_domain::{ConversationId, Timestamp};

#[derive(Debug, Default)]
pub(super) struct LaneBook {
    /// Waiting events per conversation.
    pending: HashMap<ConversationId, u64>,
    /// Conversations with waiting events and no owner, oldest first.
    ready: VecDeque<ConversationId>,
    queued: HashSet<ConversationId>,
    /// Owner token and lease expiry per claimed conversation.
    leased: HashMap<ConversationId, (String, Timestamp)>,
}

impl LaneBook {
    pub(super) fn add_pending(&mut self, id: &ConversationId, count: u64) {
        *self.pending.entry(id.clone()).or_default() += count;
        if !self.leased.contains_key(id) {
            self.offer(id);
        }
    }

    pub(super) fn consumed(&mut self, id: &ConversationId, count: u64) {
        if let Some(n) = self.pending.get_mut(id) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                self.pending.remove(id);
            }
        }
    }

    fn offer(&mut self, id: &ConversationId) {
        if self.queued.insert(id.clone()) {
            self.ready.push_back(id.clone());
        }
    }

    pub(super) fn claim(
        &mut self,
        now: Timestamp,
        until: Timestamp,
        token: String,
    ) -> Option<ConversationId> {
        // A lane whose owner vanished (a crashed task) becomes claimable when its lease ends.
        let expired: Vec<ConversationId> = self
            .leased
            .iter()
            .filter(|(_, (_, end))| *end <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.leased.remove(&id);
            if self.pending.contains_key(&id) {
                self.offer(&id);
            }
        }
        let id = self.ready.pop_front()?;
        self.queued.remove(&id);
        self.leased.insert(id.clone(), (token, until));
        Some(id)
    }

    pub(super) fn holds(&self, id: &ConversationId, token: &str) -> bool {
        self.leased.get(id).is_some_and(|(t, _)| t == token)
    }

    pub(super) fn extend(&mut self, id: &ConversationId, until: Timestamp) {
        if let Some((_, end)) = self.leased.get_mut(id) {
            *end = until;
        }
    }

    /// Returns true when the lane was offered again because events are waiting.
    pub(super) fn release(&mut self, id: &ConversationId, token: &str) -> bool {
        if !self.holds(id, token) {
            return false;
        }
        self.leased.remove(id);
        if self.pending.contains_key(id) {
            self.offer(id);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ConversationId {
        ConversationId::parse(s).unwrap()
    }

    #[test]
    fn a_claimed_lane_is_not_offered_twice_and_comes_back_when_released_with_work() {
        let mut book = LaneBook::default();
        book.add_pending(&id("1:a"), 2);
        assert_eq!(
            book.claim(Timestamp(0), Timestamp(100), "t".into()),
            Some(id("1:a"))
        );
        book.add_pending(&id("1:a"), 1);
        assert_eq!(book.claim(Timestamp(0), Timestamp(100), "u".into()), None);
        book.consumed(&id("1:a"), 1);
        assert!(!book.release(&id("1:a"), "wrong"));
        assert!(book.release(&id("1:a"), "t"));
        assert_eq!(
            book.claim(Timestamp(0), Timestamp(100), "v".into()),
            Some(id("1:a"))
        );
    }

    #[test]
    fn an_expired_lease_is_claimable_again() {
        let mut book = LaneBook::default();
        book.add_pending(&id("1:a"), 1);
        book.claim(Timestamp(0), Timestamp(100), "t".into());
        assert_eq!(book.claim(Timestamp(50), Timestamp(150), "u".into()), None);
        assert_eq!(
            book.claim(Timestamp(100), Timestamp(200), "u".into()),
            Some(id("1:a"))
        );
        assert!(!book.holds(&id("1:a"), "t"));
    }
}
