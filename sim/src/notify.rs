//! Notifications, Withings' side: the `HEAD` check of a callback URL at subscribe time, and
//! the delivery of notifications to every matching subscription, with retries and the removal
//! of subscriptions whose callback keeps failing.
//!
//! What is documented and what is not (protocol notes, section 7):
//! - DOC: the callback must answer a `HEAD` with 2xx before a subscription is accepted;
//!   deliveries are `POST` forms that must be answered 2xx within 2 s; failures are retried.
//! - OPEN: the status and message of a failed check (observed: 293 "The callback URL … is
//!   either unknown or invalid"; the simulator sends 293 without the URL); whether 3xx counts
//!   as success ([`SimConfig::notify_accept_below_400`](super::SimConfig)); the retry interval
//!   and how many failures remove a subscription (4 on an older page, 10 on a newer one:
//!   [`SimConfig::notify_max_failures`](super::SimConfig), default 10); which subscriptions
//!   receive user events (here: the user's `appli=46` subscriptions).
//!
//! The simulator reaches callbacks over plain http only (loopback receivers in tests): an
//! https callback fails the check.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;

use super::Shared;
use super::history::{TIMEZONE, ymd};
use super::state::{State, SubscriptionKey, unix_secs};
use super::{SimGroup, SimMeasure, SimSource};

/// The status and message of a subscription whose callback failed the `HEAD` check (OPEN:
/// Withings was seen answering 293 "The callback URL '…' is either unknown or invalid"; the
/// URL is left out here).
pub(crate) const CALLBACK_STATUS: i64 = 293;
pub(crate) const CALLBACK_UNREACHABLE: &str = "Invalid Params: the callback URL is either unknown or invalid (it did not answer HEAD with 2xx in time)";

/// The appli codes Withings documents (2 temperature on its notification page, 58 glucose in
/// the maintained peers: withings-data.md §5); others are refused at subscribe time.
pub(crate) const KNOWN_APPLI: [i64; 13] = [1, 2, 4, 16, 44, 46, 50, 51, 52, 53, 54, 55, 58];

/// The category of user events (`action=unlink`, `delete`, `update`).
const USER_APPLI: i64 = 46;

/// One notification on its way to one subscription.
pub(crate) struct Delivery {
    /// The subscription it goes to (its identity: client, user, callback URL, appli).
    pub(crate) to: SubscriptionKey,
    pub(crate) form: String,
    /// User events still go out when their subscription was removed with the user's tokens.
    pub(crate) after_removal: bool,
}

/// Which `appli` a new measure of `meastype` is notified as.
pub(crate) fn appli_of_meastype(meastype: i64) -> i64 {
    // Withings' notification page: 2 is temperature; 58 is glucose (type 119) in the
    // maintained peers (withings-data.md §5).
    match meastype {
        9 | 10 | 11 | 54 | 91 => 4,
        12 | 71 | 73 => 2,
        119 => 58,
        _ => 1,
    }
}

/// The appli a group's notification goes to: its first measure's.
fn group_appli(measures: &[SimMeasure]) -> i64 {
    measures
        .first()
        .map_or(1, |m| appli_of_meastype(m.meastype))
}

impl State {
    /// The deliveries of a data notification to every subscription of `userid` for `appli`.
    pub(crate) fn data_notifications(
        &self,
        userid: u64,
        appli: i64,
        startdate: u64,
        enddate: u64,
    ) -> Vec<Delivery> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("userid", &userid.to_string())
            .append_pair("appli", &appli.to_string())
            .append_pair("startdate", &startdate.to_string())
            .append_pair("enddate", &enddate.to_string())
            .finish();
        self.subscriptions
            .iter()
            .filter(|s| s.key.userid == userid && s.key.appli == appli)
            .map(|s| Delivery {
                to: s.key.clone(),
                form: form.clone(),
                after_removal: false,
            })
            .collect()
    }

    /// The deliveries of a user event (`unlink`, `delete`) to the user's `appli=46`
    /// subscriptions (of `client_id` only, if given).
    pub(crate) fn user_event(
        &self,
        userid: u64,
        action: &str,
        client_id: Option<&str>,
    ) -> Vec<Delivery> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("userid", &userid.to_string())
            .append_pair("appli", &USER_APPLI.to_string())
            .append_pair("action", action)
            .append_pair("date", &unix_secs(self.now()).to_string())
            .finish();
        self.subscriptions
            .iter()
            .filter(|s| s.key.userid == userid && s.key.appli == USER_APPLI)
            .filter(|s| client_id.is_none_or(|c| c == s.key.client_id))
            .map(|s| Delivery {
                to: s.key.clone(),
                form: form.clone(),
                after_removal: true,
            })
            .collect()
    }

    /// Records a new measure group for `userid` at the simulator's now; returns its date and
    /// the deliveries it causes.
    pub(crate) fn add_measure(
        &mut self,
        userid: u64,
        meastype: i64,
        value: i64,
        unit: i64,
    ) -> (u64, Vec<Delivery>) {
        let date = unix_secs(self.now());
        let measure = SimMeasure {
            meastype,
            value,
            unit,
            position: None,
        };
        let (_, deliveries) = self.add_group(userid, date, 0, vec![measure]);
        (date, deliveries)
    }

    /// Stores a group dated `date`, created and modified now; its id and the deliveries.
    pub(crate) fn add_group(
        &mut self,
        userid: u64,
        date: u64,
        attrib: i64,
        measures: Vec<SimMeasure>,
    ) -> (u64, Vec<Delivery>) {
        let now = unix_secs(self.now());
        let appli = group_appli(&measures);
        let history = self.history(userid);
        let grpid = history.grpid();
        let manual = matches!(attrib, 2 | 4);
        history.groups.push(SimGroup {
            grpid,
            attrib,
            category: 1,
            date,
            created: now,
            modified: now,
            source: SimSource {
                model: (!manual).then(|| "Body+".to_owned()),
                modelid: (!manual).then_some(5),
                ..SimSource::default()
            },
            measures,
        });
        (
            grpid,
            self.data_notifications(userid, appli, date, date + 1),
        )
    }

    /// Replaces the measures of a group; `modified` moves to now (at least one second on).
    /// `None` if the user has no such group.
    pub(crate) fn edit_group(
        &mut self,
        userid: u64,
        grpid: u64,
        measures: Vec<SimMeasure>,
    ) -> Option<Vec<Delivery>> {
        let now = unix_secs(self.now());
        let group = (self.history(userid).groups.iter_mut()).find(|g| g.grpid == grpid)?;
        group.modified = now.max(group.modified + 1);
        group.measures = measures;
        let (appli, date) = (group_appli(&group.measures), group.date);
        Some(self.data_notifications(userid, appli, date, date + 1))
    }

    /// Removes a group without a trace (Withings notifies, but no read shows the deletion).
    /// `None` if the user has no such group.
    pub(crate) fn delete_group(&mut self, userid: u64, grpid: u64) -> Option<Vec<Delivery>> {
        let groups = &mut self.history(userid).groups;
        let index = groups.iter().position(|g| g.grpid == grpid)?;
        let group = groups.remove(index);
        let (appli, date) = (group_appli(&group.measures), group.date);
        Some(self.data_notifications(userid, appli, date, date + 1))
    }

    /// Sets today's steps for `userid` (today's row is created or changed, `modified` now);
    /// returns the notified range and the deliveries.
    pub(crate) fn add_activity(&mut self, userid: u64, steps: u64) -> ((u64, u64), Vec<Delivery>) {
        let now = unix_secs(self.now());
        let start = now - now % 86_400;
        let today = ymd(now);
        let rows = &mut self.history(userid).v2().activities;
        match rows.iter_mut().find(|r| r["date"] == today.as_str()) {
            Some(row) => {
                row["steps"] = steps.into();
                row["modified"] = now.into();
            }
            None => {
                let mut row = rows
                    .last()
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({}));
                row["date"] = today.into();
                row["timezone"] = TIMEZONE.into();
                row["steps"] = steps.into();
                row["modified"] = now.into();
                rows.push(row);
            }
        }
        let deliveries = self.data_notifications(userid, 16, start, now);
        ((start, now), deliveries)
    }

    /// A delivery succeeded: its subscription's failure count starts again.
    fn delivered(&mut self, d: &Delivery) {
        self.notify_counters.deliveries += 1;
        if let Some(s) = (self.subscriptions.iter_mut()).find(|s| s.key == d.to) {
            s.failures = 0;
        }
    }

    /// A delivery failed; true when its subscription is (now) gone and retrying must stop.
    fn delivery_failed(&mut self, d: &Delivery) -> bool {
        self.notify_counters.delivery_failures += 1;
        let max = self.config.notify_max_failures.max(1);
        let Some(index) = (self.subscriptions.iter()).position(|s| s.key == d.to) else {
            return true;
        };
        let sub = &mut self.subscriptions[index];
        sub.failures += 1;
        if sub.failures >= max {
            self.subscriptions.remove(index);
            self.notify_counters.subscriptions_removed += 1;
            return true;
        }
        false
    }

    fn subscribed(&self, d: &Delivery) -> bool {
        (self.subscriptions.iter()).any(|s| s.key == d.to)
    }
}

/// `HEAD url`: true on 2xx within the notification timeout.
pub(crate) async fn check_callback(shared: &Shared, url: &str) -> bool {
    let timeout = {
        let mut st = shared.lock();
        st.notify_counters.callback_checks += 1;
        st.config.notify_timeout
    };
    let ok = match Request::head(url).body(Full::new(Bytes::new())) {
        Ok(request) => matches!(
            tokio::time::timeout(timeout, shared.client.request(request)).await,
            Ok(Ok(response)) if response.status().is_success()
        ),
        Err(_) => false,
    };
    if !ok {
        shared.lock().notify_counters.callback_check_failures += 1;
    }
    ok
}

/// Starts each delivery on its own task.
pub(crate) fn spawn(shared: &Arc<Shared>, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        shared
            .runtime
            .spawn(deliver(Arc::downgrade(shared), delivery));
    }
}

/// POSTs the form until the callback accepts it, the subscription is removed after
/// `notify_max_failures` consecutive failures, or the simulator is dropped. The simulator is
/// only held during an attempt, never while waiting to retry.
async fn deliver(shared: Weak<Shared>, delivery: Delivery) {
    let mut failures = 0u32;
    loop {
        let Some(sh) = shared.upgrade() else { return };
        let (timeout, accept_3xx, interval, repeats) = {
            let mut st = sh.lock();
            if !delivery.after_removal && !st.subscribed(&delivery) {
                return;
            }
            st.notify_counters.delivery_attempts += 1;
            let c = &st.config;
            (
                c.notify_timeout,
                c.notify_accept_below_400,
                c.notify_retry_interval,
                c.notify_duplicates,
            )
        };
        if post(&sh, &delivery, timeout, accept_3xx).await {
            sh.lock().delivered(&delivery);
            // Withings sometimes sends a notification again (a retry after an answer it did
            // not see in time): the receiver must acknowledge and ignore the repeats.
            for _ in 0..repeats {
                sh.lock().notify_counters.duplicates_sent += 1;
                post(&sh, &delivery, timeout, accept_3xx).await;
            }
            return;
        }
        let stop = {
            let mut st = sh.lock();
            if delivery.after_removal {
                st.notify_counters.delivery_failures += 1;
                failures += 1;
                failures >= st.config.notify_max_failures.max(1)
            } else {
                st.delivery_failed(&delivery)
            }
        };
        drop(sh);
        if stop {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// One delivery attempt: true if the callback answered in time with a success status.
async fn post(shared: &Shared, d: &Delivery, timeout: Duration, accept_3xx: bool) -> bool {
    let request = Request::post(d.to.callbackurl.as_str())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(d.form.clone())));
    let Ok(request) = request else { return false };
    match tokio::time::timeout(timeout, shared.client.request(request)).await {
        Ok(Ok(response)) => {
            let status = response.status();
            status.is_success() || (accept_3xx && status.is_redirection())
        }
        _ => false,
    }
}
