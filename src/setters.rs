//! `setters!`: the builder methods that set one field each, written as a list.

/// Builder methods that each set one field of `self` and return `self`. One entry a method,
/// with its doc comment:
///
/// - `fn name(arg: Type) => field;` stores `arg` as it is;
/// - `fn name(arg: Type) => field = expr;` stores what `expr` makes of `arg` (a floor, a
///   copy, `Some(arg)`);
/// - `fn name() => field = expr;` (no argument) stores `expr`: an opt-in flag.
///
/// `field` may be a path into a sub-struct (`policy.skew`).
macro_rules! setters {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty)?) => $($field:ident).+ $(= $value:expr)?;
    )+) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $($arg: $ty)?) -> Self {
                self.$($field).+ = $crate::setters::setters!(@value $($arg)? $(, $value)?);
                self
            }
        )+
    };
    (@value $arg:ident) => {
        $arg
    };
    (@value $($arg:ident)?, $value:expr) => {
        $value
    };
}
pub(crate) use setters;
