//! Budget alerts: when settled spend crosses one of `[notifications] budget_alert_percent`
//! of a scope's daily or monthly budget, a [`BudgetAlert`] goes to the channel the server
//! turns into notifications (`notify::budget_alerts`). The highest threshold a settlement
//! crosses is the one told; the notification's dedupe key makes it once per threshold and
//! window whichever replica sees it first.
//!
//! Each replica judges by its own counters (the scope's spend when it was loaded, plus what
//! this replica has settled since): with several replicas an alert can come late, by up to
//! the other replicas' spend since the scope was loaded here.

use super::limits::Limits;

/// A budget crossing one of the alert thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetAlert {
    pub tenant_id: String,
    /// The end user, for a user's budget.
    pub user: Option<String>,
    pub label: String,
    /// `day` or `month`.
    pub period: &'static str,
    /// The day or month index (an alert is sent once per threshold and window).
    pub window: i64,
    pub percent: u32,
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub scope: String,
}

/// Where alerts go, and at which percentages.
pub(super) struct AlertSink {
    pub percents: Vec<u32>,
    pub tx: tokio::sync::mpsc::UnboundedSender<BudgetAlert>,
}

/// What an alert about a scope needs: the scope as last admitted.
#[derive(Debug, Clone)]
pub(super) struct Alerting {
    pub limits: Limits,
    pub tenant_id: String,
    pub user: Option<String>,
    pub label: String,
}

impl Alerting {
    /// The alerts a settlement of `usd` triggers, given the (window, spend) of the day and
    /// the month after it.
    pub fn crossed(
        &self,
        key: &str,
        usd: f64,
        spent: [(i64, f64); 2],
        percents: &[u32],
    ) -> Vec<BudgetAlert> {
        let periods = [
            ("day", spent[0], self.limits.usd_per_day),
            ("month", spent[1], self.limits.usd_per_month),
        ];
        let mut out = vec![];
        for (period, (window, spent), limit) in periods {
            let Some(limit) = limit.filter(|l| *l > 0.0) else {
                continue;
            };
            let (before, after) = ((spent - usd) / limit * 100.0, spent / limit * 100.0);
            // The highest threshold crossed is the one worth telling.
            if let Some(p) = percents
                .iter()
                .copied()
                .filter(|p| before < f64::from(*p) && after >= f64::from(*p))
                .max()
            {
                out.push(BudgetAlert {
                    tenant_id: self.tenant_id.clone(),
                    user: self.user.clone(),
                    label: self.label.clone(),
                    period,
                    window,
                    percent: p,
                    spent_usd: spent,
                    limit_usd: limit,
                    scope: key.to_string(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_threshold_crossed_is_told_once() {
        let a = Alerting {
            limits: Limits {
                usd_per_day: Some(10.0),
                ..Default::default()
            },
            tenant_id: "t".into(),
            user: None,
            label: "tenant `t`".into(),
        };
        let p = [50, 90, 100];
        assert!(a.crossed("k", 1.0, [(1, 4.0), (1, 4.0)], &p).is_empty());
        let one = a.crossed("k", 2.0, [(1, 6.0), (1, 6.0)], &p);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].percent, one[0].period), (50, "day"));
        let jump = a.crossed("k", 5.0, [(1, 11.0), (1, 11.0)], &p);
        assert_eq!(jump[0].percent, 100, "90 and 100 at once: the highest");
        assert!(a.crossed("k", 1.0, [(1, 12.0), (1, 12.0)], &p).is_empty());
    }
}
