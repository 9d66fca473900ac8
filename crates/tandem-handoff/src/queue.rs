//! The order of conversations waiting for a person: the most urgent first, then the one whose
//! 24-hour window closes soonest (after it closes only a template can reach the customer),
//! then the one that has waited longest.

use tandem_domain::{ConversationId, Priority, Timestamp, Urgency};

/// A conversation waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The conversation.
    pub conversation: ConversationId,
    /// The team it waits for, if any.
    pub team: Option<tandem_domain::TeamId>,
    /// From [`rank`]: higher is served first.
    pub rank: u8,
    /// When its customer-service window closes (`None`: already closed).
    pub window_closes_at: Option<Timestamp>,
    /// When the person was asked for.
    pub requested_at: Timestamp,
}

/// Ranks a handoff by its priority (`low`, `normal`, `high`, `urgent`) and, when the LLM
/// triaged the customer's message, its urgency (`high` raises a normal request to high).
pub fn rank(priority: Priority, urgency: Option<Urgency>) -> u8 {
    let raised = if urgency == Some(Urgency::High) {
        priority.max(Priority::High)
    } else {
        priority
    };
    match raised {
        Priority::Low => 1,
        Priority::Normal => 2,
        Priority::High => 3,
        Priority::Urgent => 4,
    }
}

/// Sorts waiting conversations in the order they are served.
pub fn sort_queue(queue: &mut [Waiting]) {
    queue.sort_by(|a, b| {
        b.rank
            .cmp(&a.rank)
            // An open window closing soon first; a closed window (None) after every open one.
            .then_with(|| match (a.window_closes_at, b.window_closes_at) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.requested_at.cmp(&b.requested_at))
            .then_with(|| a.conversation.cmp(&b.conversation))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(id: &str, rank: u8, closes: Option<u64>, at: u64) -> Waiting {
        Waiting {
            conversation: ConversationId::parse(&format!("1:{id}")).unwrap(),
            team: None,
            rank,
            window_closes_at: closes.map(Timestamp),
            requested_at: Timestamp(at),
        }
    }

    #[test]
    fn urgent_first_then_the_window_closing_soonest_then_the_longest_wait() {
        let mut q = vec![
            waiting("10", 2, Some(9_000), 1),
            waiting("11", 2, None, 0),
            waiting("12", 4, Some(99_000), 5),
            waiting("13", 2, Some(5_000), 3),
            waiting("14", 2, Some(5_000), 2),
        ];
        sort_queue(&mut q);
        let order: Vec<_> = q.iter().map(|w| w.conversation.to_string()).collect();
        assert_eq!(order, ["1:12", "1:14", "1:13", "1:10", "1:11"]);
    }

    #[test]
    fn high_urgency_raises_a_normal_request() {
        use Priority::{High, Low, Normal, Urgent};
        assert_eq!(rank(Normal, Some(Urgency::High)), rank(High, None));
        assert!(rank(Urgent, Some(Urgency::Low)) > rank(High, Some(Urgency::High)));
        assert!(rank(Low, None) < rank(Normal, None));
        assert_eq!(rank(Low, Some(Urgency::High)), rank(High, None));
    }
}
