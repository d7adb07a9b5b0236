//! The emergency state: early boot failed, PID1 stays up.
//!
//! The machine keeps reaping, answering power signals and running the admin
//! shell so an operator can look; the line repeats so that whoever attaches
//! to the console later still sees why.

use std::fmt;
use std::time::Duration;

use berth_layout::console::EMERGENCY_PREFIX;

/// How often the emergency line is printed again.
pub const REPEAT: Duration = Duration::from_secs(30);

/// `berth: EMERGENCY: <step>: <error>`, on one line whatever the error says.
pub fn line(step: &str, error: &dyn fmt::Display) -> String {
    let error = error.to_string().replace('\n', " / ");
    format!("{EMERGENCY_PREFIX}{step}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emergency_line_names_step_and_error_on_one_line() {
        assert_eq!(
            line("data partition", &"/dev/vda4: unknown content\nsecond"),
            "berth: EMERGENCY: data partition: /dev/vda4: unknown content / second"
        );
    }
}
