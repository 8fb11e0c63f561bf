-- The audit trail's vocabulary is defined once, in code (shared::audit::Action and
-- shared::audit::Outcome); the column comments point there.
COMMENT ON COLUMN audit_events.action IS
    'What the row is about: a variant of shared::audit::Action (sign_up, sign_in, sign_out, '
    'email_verify, password_reset, rate_limited, or the kind of a mail job the worker decided).';
COMMENT ON COLUMN audit_events.outcome IS
    'How it ended: a variant of shared::audit::Outcome (for rate_limited, the budget that refused).';
