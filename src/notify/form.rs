//! The form Withings POSTs to a callback URL, parsed into a [`Notification`].

use std::fmt;

use super::Appli;
use crate::error::shorten;
use crate::token::UserId;

/// One notification from Withings: something changed for `user` in category `appli`.
///
/// Data notifications carry the time range of the new data (`startdate`, `enddate`, Unix
/// seconds): fetch it with the matching service (`getmeas` for [`Appli::Weight`], …). Other
/// categories carry `date`, `deviceid` or `action` instead ([`Appli::User`] with
/// [`Action::Unlink`] when the user unlinked the app).
///
/// ```
/// use tower_withings::UserId;
/// use tower_withings::notify::{Appli, Notification};
///
/// let n = Notification::from_form(b"userid=46865875&appli=1&startdate=1700000000&enddate=1700000001")
///     .unwrap();
/// assert_eq!(n.user, UserId(46865875));
/// assert_eq!(n.appli, Appli::Weight);
/// assert_eq!((n.startdate, n.enddate), (Some(1700000000), Some(1700000001)));
/// assert!(!n.is_revocation());
///
/// let unlink = Notification::from_form(b"userid=46865875&appli=46&action=unlink&date=1700000000").unwrap();
/// assert!(unlink.is_revocation());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Notification {
    /// `userid`: whose data changed.
    pub user: UserId,
    /// `appli`: which category.
    pub appli: Appli,
    /// `startdate`: start of the new data's time range (Unix seconds), for data categories.
    pub startdate: Option<u64>,
    /// `enddate`: end of the new data's time range (Unix seconds), for data categories.
    pub enddate: Option<u64>,
    /// `date`, as Withings sent it (a Unix timestamp or a `YYYY-MM-DD` day, by category).
    pub date: Option<String>,
    /// `deviceid`, for device events.
    pub deviceid: Option<String>,
    /// `action`, for user events ([`Appli::User`]).
    pub action: Option<Action>,
}

/// The `action` of a user event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// The user unlinked the app: their tokens are dead.
    Unlink,
    /// The user's account was deleted: their tokens are dead.
    Delete,
    /// The user's information changed.
    Update,
    /// An action this crate does not know, as sent (at most 200 characters).
    Other(String),
}

impl Action {
    fn parse(value: &str) -> Action {
        match value {
            "unlink" => Action::Unlink,
            "delete" => Action::Delete,
            "update" => Action::Update,
            other => Action::Other(shorten(other)),
        }
    }

    /// The wire value (`unlink`, `delete`, `update`, or the unknown one).
    pub fn as_str(&self) -> &str {
        match self {
            Action::Unlink => "unlink",
            Action::Delete => "delete",
            Action::Update => "update",
            Action::Other(other) => other,
        }
    }
}

/// Why a POSTed form is not a Withings notification (the receiver answers 400).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormError {
    /// A required field (`userid`, `appli`) is missing or empty.
    Missing(&'static str),
    /// A field is not what Withings sends (e.g. a `userid` that is not a number).
    Invalid(&'static str),
    /// A field Withings sends once came more than once.
    Repeated(&'static str),
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::Missing(field) => write!(f, "notification form without `{field}`"),
            FormError::Invalid(field) => write!(f, "notification form with an invalid `{field}`"),
            FormError::Repeated(field) => {
                write!(f, "notification form with `{field}` more than once")
            }
        }
    }
}

impl std::error::Error for FormError {}

/// Values longer than this are not Withings' (ids, dates and actions are short).
const MAX_VALUE: usize = 256;

impl Notification {
    /// Parses the `application/x-www-form-urlencoded` body Withings POSTs. `userid` and
    /// `appli` are required; `startdate` and `enddate` must be Unix seconds when present;
    /// unknown fields are ignored. Never panics, whatever the bytes.
    pub fn from_form(body: &[u8]) -> Result<Notification, FormError> {
        let mut user = None;
        let mut appli = None;
        let mut startdate = None;
        let mut enddate = None;
        let mut date = None;
        let mut deviceid = None;
        let mut action = None;
        for (key, value) in form_urlencoded::parse(body) {
            let field: &'static str = match key.as_ref() {
                "userid" => "userid",
                "appli" => "appli",
                "startdate" => "startdate",
                "enddate" => "enddate",
                "date" => "date",
                "deviceid" => "deviceid",
                "action" => "action",
                _ => continue,
            };
            if value.len() > MAX_VALUE || value.chars().any(char::is_control) {
                return Err(FormError::Invalid(field));
            }
            let value = value.trim();
            let repeated = match field {
                "userid" => set(&mut user, number(value, field)?.map(UserId)),
                "appli" => set(
                    &mut appli,
                    number(value, field)?
                        .map(|code| u16::try_from(code).map_err(|_| FormError::Invalid(field)))
                        .transpose()?
                        .map(Appli::from_code),
                ),
                "startdate" => set(&mut startdate, number(value, field)?),
                "enddate" => set(&mut enddate, number(value, field)?),
                "date" => set(&mut date, text(value)),
                "deviceid" => set(&mut deviceid, text(value)),
                _ => set(&mut action, text(value).map(|a| Action::parse(&a))),
            };
            if repeated {
                return Err(FormError::Repeated(field));
            }
        }
        Ok(Notification {
            user: user.ok_or(FormError::Missing("userid"))?,
            appli: appli.ok_or(FormError::Missing("appli"))?,
            startdate,
            enddate,
            date,
            deviceid,
            action,
        })
    }

    /// The form Withings would send for this notification (fields in a fixed order).
    pub fn to_form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("userid", &self.user.to_string())
            .append_pair("appli", &self.appli.to_string());
        if let Some(start) = self.startdate {
            form.append_pair("startdate", &start.to_string());
        }
        if let Some(end) = self.enddate {
            form.append_pair("enddate", &end.to_string());
        }
        if let Some(date) = &self.date {
            form.append_pair("date", date);
        }
        if let Some(device) = &self.deviceid {
            form.append_pair("deviceid", device);
        }
        if let Some(action) = &self.action {
            form.append_pair("action", action.as_str());
        }
        form.finish()
    }

    /// The user revoked this app's access (`action=unlink`) or their account is gone
    /// (`action=delete`): their tokens no longer work.
    pub fn is_revocation(&self) -> bool {
        matches!(self.action, Some(Action::Unlink | Action::Delete))
    }
}

/// Stores `value` in `slot`; true if the slot already held one (a repeated field). An empty
/// value (`None`) leaves the slot alone.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        None => false,
        Some(_) if slot.is_some() => true,
        Some(value) => {
            *slot = Some(value);
            false
        }
    }
}

/// An unsigned decimal number; an empty value is absent.
fn number(value: &str, field: &'static str) -> Result<Option<u64>, FormError> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FormError::Invalid(field));
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| FormError::Invalid(field))
}

fn text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms_parse() {
        let n = Notification::from_form(
            b"userid=12&appli=44&startdate=1700000000&enddate=1700030000&extra=ignored",
        )
        .unwrap();
        assert_eq!(n.appli, Appli::Sleep);
        assert_eq!(n.enddate, Some(1_700_030_000));
        let n =
            Notification::from_form(b"userid=12&appli=50&date=1700000000&deviceid=abc").unwrap();
        assert_eq!(n.deviceid.as_deref(), Some("abc"));
        let n = Notification::from_form(b"userid=12&appli=46&action=delete").unwrap();
        assert!(n.is_revocation());
        let n = Notification::from_form(b"userid=12&appli=46&action=rename").unwrap();
        assert_eq!(n.action, Some(Action::Other("rename".into())));
        assert!(!n.is_revocation());
        let n = Notification::from_form(b"userid=12&appli=999").unwrap();
        assert_eq!(n.appli, Appli::Unknown(999));
    }

    #[test]
    fn bad_forms_are_typed_errors() {
        use FormError::*;
        for (body, error) in [
            (&b""[..], Missing("userid")),
            (b"appli=1", Missing("userid")),
            (b"userid=1", Missing("appli")),
            (b"userid=&appli=1", Missing("userid")),
            (b"userid=x&appli=1", Invalid("userid")),
            (b"userid=-1&appli=1", Invalid("userid")),
            (b"userid=1&appli=70000", Invalid("appli")),
            (b"userid=1&appli=1&startdate=1.5", Invalid("startdate")),
            (b"userid=99999999999999999999&appli=1", Invalid("userid")),
            (b"userid=1&userid=2&appli=1", Repeated("userid")),
            (b"userid=1&appli=1&date=%0A", Invalid("date")),
        ] {
            assert_eq!(Notification::from_form(body), Err(error), "{body:?}");
        }
    }

    #[test]
    fn to_form_round_trips() {
        let n = Notification::from_form(
            b"userid=3&appli=46&date=2024-01-02&deviceid=d%26x&action=unlink",
        )
        .unwrap();
        assert_eq!(Notification::from_form(n.to_form().as_bytes()), Ok(n));
    }
}
