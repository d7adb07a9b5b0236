//! The apply plan: config + machine facts + the record -> changes (pure).
