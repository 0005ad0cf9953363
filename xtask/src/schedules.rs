//! EventBridge schedules, played by the local stack from the template's own `Schedule` events:
//! each invokes its function through the emulator every `rate / time_scale` seconds with the
//! event EventBridge sends. One run at a time per schedule, as a slow run delays the next tick.

use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::template::Function;

/// The running schedules; dropping it stops them.
pub struct Schedules {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Schedules {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The local period of a schedule: its rate divided by the time scale, at least 1 s.
pub fn local_period(every_s: u64, time_scale: u32) -> Duration {
    Duration::from_millis((every_s * 1000 / u64::from(time_scale.max(1))).max(1000))
}

/// Starts every schedule of `functions` against the emulator's Invoke API.
pub fn start(invoke_url: &str, functions: &[Function], time_scale: u32, region: &str) -> Schedules {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for function in functions {
        for schedule in &function.schedules {
            let url = format!(
                "{invoke_url}/2015-03-31/functions/{}/invocations",
                function.binary
            );
            let rule = format!(
                "arn:aws:events:{region}:000000000000:rule/{}-{}",
                function.logical_id, schedule.name
            );
            let period = local_period(schedule.every_s, time_scale);
            let http = http.clone();
            let binary = function.binary.clone();
            let region = region.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    let event = scheduled_event(&rule, &region);
                    match http.post(&url).json(&event).send().await {
                        Ok(response) if response.status().is_success() => {
                            let body = response.text().await.unwrap_or_default();
                            debug!(function = %binary, %body, "schedule: invoked");
                        }
                        Ok(response) => {
                            warn!(function = %binary, status = %response.status(), "schedule: invocation failed");
                        }
                        Err(e) => warn!(function = %binary, error = %e, "schedule: invocation failed"),
                    }
                }
            }));
        }
    }
    Schedules { tasks }
}

/// The event EventBridge sends for a scheduled rule.
fn scheduled_event(rule_arn: &str, region: &str) -> serde_json::Value {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    json!({
        "version": "0",
        "id": ulid::Ulid::new().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": now,
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_scale_down_to_one_second_at_least() {
        assert_eq!(local_period(60, 1), Duration::from_secs(60));
        assert_eq!(local_period(60, 60), Duration::from_secs(1));
        assert_eq!(local_period(60, 600), Duration::from_secs(1));
        assert_eq!(local_period(300, 60), Duration::from_secs(5));
    }

    #[test]
    fn the_event_is_eventbridges_scheduled_event() {
        let event = scheduled_event(
            "arn:aws:events:us-east-1:000000000000:rule/P-EveryMinute",
            "us-east-1",
        );
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["source"], "aws.events");
        assert_eq!(
            event["resources"][0],
            "arn:aws:events:us-east-1:000000000000:rule/P-EveryMinute"
        );
        assert!(
            event["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{event}"
        );
    }
}
