//! Pre-registered counters of the redirect listener (a label lookup per message would cost more
//! than the decision itself).

use metrics::Counter;

use super::decide::Reason;

pub(super) struct RoutingMetrics {
    decisions: Vec<(Reason, Counter)>,
    pub(super) retransmission: Counter,
    pub(super) ack_absorbed: Counter,
    pub(super) forbidden: Counter,
    pub(super) malformed: Counter,
    pub(super) stray_response: Counter,
    pub(super) not_routing: Counter,
    pub(super) remember_full: Counter,
}

impl RoutingMetrics {
    pub(super) fn new() -> Self {
        let outcome = |r: Reason| if r == Reason::PersonalManager { "redirect" } else { "no_decision" };
        Self {
            decisions: Reason::ALL
                .iter()
                .map(|&r| (r, metrics::counter!("callgate_routing_decisions_total", "outcome" => outcome(r), "reason" => r.as_str())))
                .collect(),
            retransmission: metrics::counter!("callgate_sip_retransmissions_total", "method" => "INVITE"),
            ack_absorbed: metrics::counter!("callgate_sip_ack_absorbed_total"),
            forbidden: metrics::counter!("callgate_sip_forbidden_total"),
            malformed: metrics::counter!("callgate_sip_malformed_total", "transport" => "any"),
            stray_response: metrics::counter!("callgate_sip_dropped_total", "reason" => "stray_response"),
            not_routing: metrics::counter!("callgate_sip_not_routing_total"),
            remember_full: metrics::counter!("callgate_routing_transactions_full_total"),
        }
    }

    pub(super) fn decision(&self, reason: Reason) {
        if let Some((_, c)) = self.decisions.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }
}
