-- The schema of seed 004 (personas, relationships, users, auth, calls, scheduling, credits,
-- costs, budgets, templates, admins) plus what the seeds name without defining: granular cost
-- events, rate versions, the transcript (one row per utterance) and per-turn latency.
--
-- Departures from the seed, on purpose:
-- * TIMESTAMPTZ everywhere (the seed's TIMESTAMP loses the zone; calls cross zones).
-- * Foreign keys to users(id) the seed left out; CHECKs on every status column and on money.
-- * call_logs' indexes are named idx_call_logs_* (the seed reused idx_calls_*, which collides
--   with the calls table's own indexes in one schema); call_logs.persona_id is nullable because
--   the seed's ON DELETE SET NULL cannot work on a NOT NULL column.
-- * Cost columns hold cents as NUMERIC(14,6) (exact micro-cent precision), never float.

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

-- ---------------------------------------------------------------- users and auth (seed §5)
CREATE TABLE users (
    id                  VARCHAR(255) PRIMARY KEY DEFAULT ('usr_' || replace(gen_random_uuid()::text, '-', '')),
    email               VARCHAR(255) NOT NULL UNIQUE CHECK (email = lower(email) AND position('@' in email) > 1),
    password_hash       VARCHAR(255) NOT NULL,
    name                VARCHAR(255),
    phone               VARCHAR(50),
    stripe_customer_id  VARCHAR(255),
    is_banned           BOOLEAN NOT NULL DEFAULT false,
    banned_at           TIMESTAMPTZ,
    ban_reason          TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_stripe_customer ON users(stripe_customer_id);

CREATE TABLE token_blacklist (
    token_id    VARCHAR(255) PRIMARY KEY,
    user_id     VARCHAR(255) NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_token_blacklist_user ON token_blacklist(user_id);
CREATE INDEX idx_token_blacklist_expires ON token_blacklist(expires_at);

-- Seed 003 §3.8: admins are separate from users and authenticate with a bearer token; only a
-- SHA-256 of each token is stored. ADMIN_TOKEN from the environment is the bootstrap admin.
CREATE TABLE admin_users (
    id            VARCHAR(255) PRIMARY KEY DEFAULT ('adm_' || replace(gen_random_uuid()::text, '-', '')),
    email         VARCHAR(255) NOT NULL UNIQUE,
    name          VARCHAR(255),
    token_sha256  CHAR(64) NOT NULL UNIQUE,
    role          VARCHAR(50) NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'viewer')),
    is_active     BOOLEAN NOT NULL DEFAULT true,
    last_seen_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- personas (seed §4)
CREATE TABLE personas (
    id                      VARCHAR(100) PRIMARY KEY,
    name                    VARCHAR(255) NOT NULL,
    description             TEXT,
    core_system_prompt      TEXT NOT NULL,
    default_voice_id        VARCHAR(100),
    default_voice_settings  JSONB NOT NULL DEFAULT '{"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0, "style": 0.0}',
    avatar_url              TEXT,
    category                VARCHAR(100),
    is_active               BOOLEAN NOT NULL DEFAULT true,
    is_system_persona       BOOLEAN NOT NULL DEFAULT false,
    -- Custom personas belong to one user; system personas to nobody.
    owner_user_id           VARCHAR(255) REFERENCES users(id) ON DELETE CASCADE,
    -- AI parameters (seed migration 008_add_persona_ai_params, not reproduced in the seeds).
    greeting                TEXT,
    temperature             NUMERIC(3, 2) NOT NULL DEFAULT 0.70 CHECK (temperature BETWEEN 0 AND 2),
    max_tokens              INTEGER NOT NULL DEFAULT 150 CHECK (max_tokens BETWEEN 1 AND 4096),
    endpointing_ms          INTEGER NOT NULL DEFAULT 300 CHECK (endpointing_ms BETWEEN 10 AND 5000),
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (jsonb_typeof(default_voice_settings) = 'object'),
    CHECK (NOT (is_system_persona AND owner_user_id IS NOT NULL))
);
CREATE INDEX idx_personas_active ON personas(is_active);
CREATE INDEX idx_personas_category ON personas(category);
CREATE INDEX idx_personas_owner ON personas(owner_user_id) WHERE owner_user_id IS NOT NULL;

CREATE TABLE user_persona_relationships (
    id                      VARCHAR(100) PRIMARY KEY DEFAULT ('rel_' || replace(gen_random_uuid()::text, '-', '')),
    user_id                 VARCHAR(100) NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    persona_id              VARCHAR(100) NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    relationship_type       VARCHAR(100) NOT NULL DEFAULT 'friend',
    custom_system_prompt    TEXT,
    voice_id                VARCHAR(100),
    voice_settings          JSONB NOT NULL DEFAULT '{"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0, "style": 0.0}',
    total_calls             INTEGER NOT NULL DEFAULT 0 CHECK (total_calls >= 0),
    total_duration_seconds  INTEGER NOT NULL DEFAULT 0 CHECK (total_duration_seconds >= 0),
    last_call_at            TIMESTAMPTZ,
    is_favorite             BOOLEAN NOT NULL DEFAULT false,
    is_archived             BOOLEAN NOT NULL DEFAULT false,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, persona_id),
    CHECK (jsonb_typeof(voice_settings) = 'object')
);
CREATE INDEX idx_relationships_user ON user_persona_relationships(user_id);
CREATE INDEX idx_relationships_persona ON user_persona_relationships(persona_id);
CREATE INDEX idx_relationships_user_persona ON user_persona_relationships(user_id, persona_id);
CREATE INDEX idx_relationships_favorite ON user_persona_relationships(user_id, is_favorite) WHERE is_favorite = true;

-- ---------------------------------------------------------------- credits (seed §6)
CREATE TABLE user_credits (
    user_id                     VARCHAR(255) PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    available_credits           INTEGER NOT NULL DEFAULT 0 CHECK (available_credits >= 0),
    subscription_tier           VARCHAR(50) NOT NULL DEFAULT 'free'
                                CHECK (subscription_tier IN ('free', 'basic', 'premium', 'unlimited')),
    subscription_status         VARCHAR(50) CHECK (subscription_status IN ('active', 'canceled', 'expired')),
    subscription_stripe_id      VARCHAR(255),
    subscription_start_date     TIMESTAMPTZ,
    subscription_end_date       TIMESTAMPTZ,
    monthly_credit_allowance    INTEGER NOT NULL DEFAULT 0 CHECK (monthly_credit_allowance >= 0),
    -- NULL = unlimited (premium/unlimited tiers).
    max_calls_per_day           INTEGER DEFAULT 3 CHECK (max_calls_per_day >= 0),
    max_call_duration_seconds   INTEGER NOT NULL DEFAULT 600 CHECK (max_call_duration_seconds > 0),
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- calls (seed §7)
CREATE TABLE calls (
    id                      VARCHAR(255) PRIMARY KEY DEFAULT ('call_' || replace(gen_random_uuid()::text, '-', '')),
    user_id                 VARCHAR(255) NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    persona_id              VARCHAR(255) NOT NULL REFERENCES personas(id),
    phone_number            VARCHAR(50) NOT NULL,
    twilio_call_sid         VARCHAR(255) UNIQUE,
    -- Seed §7.1 flow, plus Twilio's terminal 'canceled' (hung up before answer).
    status                  VARCHAR(50) NOT NULL DEFAULT 'initiating'
                            CHECK (status IN ('initiating', 'calling', 'connected', 'in_progress',
                                              'completed', 'failed', 'no_answer', 'busy', 'canceled')),
    payment_method          VARCHAR(50) CHECK (payment_method IN ('stripe', 'credit', 'subscription')),
    payment_intent_id       VARCHAR(255),
    payment_status          VARCHAR(50) CHECK (payment_status IN ('pending', 'paid', 'failed', 'credit_used')),
    estimated_cost_cents    INTEGER CHECK (estimated_cost_cents >= 0),
    actual_cost_cents       INTEGER CHECK (actual_cost_cents >= 0),
    credits_used            INTEGER CHECK (credits_used >= 0),
    max_duration_seconds    INTEGER CHECK (max_duration_seconds > 0),
    -- Twilio status callbacks arrive out of order and are retried: remember the highest
    -- SequenceNumber seen and the raw status.
    twilio_status           VARCHAR(50),
    twilio_sequence         INTEGER,
    stream_sid              VARCHAR(255),
    start_time              TIMESTAMPTZ NOT NULL DEFAULT now(),
    answered_at             TIMESTAMPTZ,
    end_time                TIMESTAMPTZ,
    duration_seconds        INTEGER CHECK (duration_seconds >= 0),
    -- Set once, by whichever of stop / socket close / status callback finalizes the call first.
    finalized_at            TIMESTAMPTZ,
    error_message           TEXT,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_calls_user_id ON calls(user_id);
CREATE INDEX idx_calls_persona_id ON calls(persona_id);
CREATE INDEX idx_calls_status ON calls(status);
CREATE INDEX idx_calls_user_created ON calls(user_id, created_at DESC);

CREATE TABLE scheduled_calls (
    id              VARCHAR(255) PRIMARY KEY DEFAULT ('sch_' || replace(gen_random_uuid()::text, '-', '')),
    user_id         VARCHAR(255) NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    persona_id      VARCHAR(255) NOT NULL REFERENCES personas(id),
    phone_number    VARCHAR(50) NOT NULL,
    scheduled_time  TIMESTAMPTZ NOT NULL,
    status          VARCHAR(50) NOT NULL DEFAULT 'scheduled'
                    CHECK (status IN ('scheduled', 'executing', 'executed', 'failed', 'canceled')),
    executed_at     TIMESTAMPTZ,
    call_id         VARCHAR(255) REFERENCES calls(id),
    error_message   TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_scheduled_calls_user_id ON scheduled_calls(user_id);
CREATE INDEX idx_scheduled_calls_scheduled_time ON scheduled_calls(scheduled_time);
CREATE INDEX idx_scheduled_calls_due ON scheduled_calls(scheduled_time) WHERE status = 'scheduled';

CREATE TABLE call_logs (
    id                      VARCHAR(100) PRIMARY KEY DEFAULT ('log_' || replace(gen_random_uuid()::text, '-', '')),
    call_id                 VARCHAR(255) UNIQUE REFERENCES calls(id) ON DELETE CASCADE,
    user_id                 VARCHAR(100) NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    persona_id              VARCHAR(100) REFERENCES personas(id) ON DELETE SET NULL,
    twilio_call_sid         VARCHAR(100),
    phone_number            VARCHAR(50),
    duration_seconds        INTEGER NOT NULL DEFAULT 0 CHECK (duration_seconds >= 0),
    status                  VARCHAR(50) NOT NULL DEFAULT 'initiated'
                            CHECK (status IN ('initiated', 'connected', 'completed', 'failed')),
    error_message           TEXT,
    cost_stt                INTEGER NOT NULL DEFAULT 0 CHECK (cost_stt >= 0),
    cost_llm                INTEGER NOT NULL DEFAULT 0 CHECK (cost_llm >= 0),
    cost_tts                INTEGER NOT NULL DEFAULT 0 CHECK (cost_tts >= 0),
    cost_twilio             INTEGER NOT NULL DEFAULT 0 CHECK (cost_twilio >= 0),
    cost_total              INTEGER NOT NULL DEFAULT 0 CHECK (cost_total >= 0),
    turn_count              INTEGER NOT NULL DEFAULT 0 CHECK (turn_count >= 0),
    interrupt_count         INTEGER NOT NULL DEFAULT 0 CHECK (interrupt_count >= 0),
    avg_response_time_ms    INTEGER CHECK (avg_response_time_ms >= 0),
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at                TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_call_logs_user ON call_logs(user_id);
CREATE INDEX idx_call_logs_persona ON call_logs(persona_id);
CREATE INDEX idx_call_logs_user_persona ON call_logs(user_id, persona_id);
CREATE INDEX idx_call_logs_started_at ON call_logs(started_at DESC);
CREATE INDEX idx_call_logs_status ON call_logs(status);

-- Transcript: one row per utterance, as it happens. Offsets are ms from stream start;
-- `interrupted` marks a persona utterance cut by barge-in (text = what the caller heard).
CREATE TABLE call_transcripts (
    id           BIGSERIAL PRIMARY KEY,
    call_id      VARCHAR(255) NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL CHECK (seq >= 0),
    turn_id      INTEGER,
    speaker      VARCHAR(20) NOT NULL CHECK (speaker IN ('caller', 'persona', 'system', 'dtmf')),
    text         TEXT NOT NULL,
    start_ms     INTEGER NOT NULL CHECK (start_ms >= 0),
    end_ms       INTEGER CHECK (end_ms >= start_ms),
    interrupted  BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (call_id, seq)
);

-- Per-turn latency: each stage as ms from stream start, so any interval can be derived.
CREATE TABLE call_turn_latencies (
    id                      BIGSERIAL PRIMARY KEY,
    call_id                 VARCHAR(255) NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    turn_id                 INTEGER NOT NULL CHECK (turn_id >= 0),
    speech_end_ms           INTEGER,
    stt_final_ms            INTEGER,
    llm_first_token_ms      INTEGER,
    tts_first_byte_ms       INTEGER,
    first_media_ms          INTEGER,
    voice_to_voice_ms       INTEGER GENERATED ALWAYS AS (first_media_ms - speech_end_ms) STORED,
    interrupted             BOOLEAN NOT NULL DEFAULT false,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (call_id, turn_id)
);

-- ---------------------------------------------------------------- credit audit (seed §6.2)
CREATE TABLE credit_transactions (
    id                  VARCHAR(255) PRIMARY KEY DEFAULT ('txn_' || replace(gen_random_uuid()::text, '-', '')),
    user_id             VARCHAR(255) NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amount              INTEGER NOT NULL,
    type                VARCHAR(50) NOT NULL
                        CHECK (type IN ('purchase', 'subscription_refill', 'call_deduction', 'refund', 'admin_adjustment', 'signup_bonus')),
    call_id             VARCHAR(255) REFERENCES calls(id) ON DELETE SET NULL,
    payment_intent_id   VARCHAR(255),
    description         TEXT,
    balance_before      INTEGER CHECK (balance_before >= 0),
    balance_after       INTEGER CHECK (balance_after >= 0),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (balance_before IS NULL OR balance_after IS NULL OR balance_after = balance_before + amount)
);
CREATE INDEX idx_credit_transactions_user ON credit_transactions(user_id);
CREATE INDEX idx_credit_transactions_type ON credit_transactions(type);
CREATE INDEX idx_credit_transactions_created ON credit_transactions(created_at DESC);
-- A call is deducted at most once, whatever order its end signals arrive in.
CREATE UNIQUE INDEX uq_credit_transactions_call_deduction ON credit_transactions(call_id) WHERE type = 'call_deduction';

-- ---------------------------------------------------------------- costs (seed §8)
-- Rates are versioned: each call records the version it ran under, so a price change never
-- re-prices old calls.
CREATE TABLE cost_rate_versions (
    id          SERIAL PRIMARY KEY,
    rates       JSONB NOT NULL UNIQUE CHECK (jsonb_typeof(rates) = 'object'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE call_cost_events (
    id               BIGSERIAL PRIMARY KEY,
    call_id          VARCHAR(255) NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL CHECK (seq >= 0),
    provider         VARCHAR(20) NOT NULL CHECK (provider IN ('twilio', 'deepgram', 'cerebras', 'elevenlabs')),
    unit             VARCHAR(20) NOT NULL CHECK (unit IN ('minute', 'audio_second', 'input_token', 'output_token', 'character')),
    quantity         NUMERIC(18, 6) NOT NULL CHECK (quantity >= 0),
    cost_microcents  BIGINT NOT NULL CHECK (cost_microcents >= 0),
    rate_version_id  INTEGER REFERENCES cost_rate_versions(id),
    occurred_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (call_id, seq)
);
CREATE INDEX idx_cost_events_call ON call_cost_events(call_id);

CREATE TABLE call_cost_breakdowns (
    id                       VARCHAR(255) PRIMARY KEY DEFAULT ('cost_' || replace(gen_random_uuid()::text, '-', '')),
    call_id                  VARCHAR(255) NOT NULL UNIQUE REFERENCES calls(id) ON DELETE CASCADE,
    twilio_cost_cents        NUMERIC(14, 6) NOT NULL DEFAULT 0 CHECK (twilio_cost_cents >= 0),
    deepgram_cost_cents      NUMERIC(14, 6) NOT NULL DEFAULT 0 CHECK (deepgram_cost_cents >= 0),
    cerebras_cost_cents      NUMERIC(14, 6) NOT NULL DEFAULT 0 CHECK (cerebras_cost_cents >= 0),
    elevenlabs_cost_cents    NUMERIC(14, 6) NOT NULL DEFAULT 0 CHECK (elevenlabs_cost_cents >= 0),
    twilio_duration_seconds  INTEGER NOT NULL DEFAULT 0 CHECK (twilio_duration_seconds >= 0),
    deepgram_audio_seconds   NUMERIC(12, 2) NOT NULL DEFAULT 0 CHECK (deepgram_audio_seconds >= 0),
    cerebras_input_tokens    INTEGER NOT NULL DEFAULT 0 CHECK (cerebras_input_tokens >= 0),
    cerebras_output_tokens   INTEGER NOT NULL DEFAULT 0 CHECK (cerebras_output_tokens >= 0),
    elevenlabs_characters    INTEGER NOT NULL DEFAULT 0 CHECK (elevenlabs_characters >= 0),
    total_cost_cents         NUMERIC(14, 6) NOT NULL DEFAULT 0 CHECK (total_cost_cents >= 0),
    rate_version_id          INTEGER REFERENCES cost_rate_versions(id),
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (total_cost_cents = twilio_cost_cents + deepgram_cost_cents + cerebras_cost_cents + elevenlabs_cost_cents)
);
CREATE INDEX idx_cost_breakdowns_call ON call_cost_breakdowns(call_id);
CREATE INDEX idx_cost_breakdowns_created ON call_cost_breakdowns(created_at DESC);

CREATE TABLE user_budget_settings (
    user_id                  VARCHAR(255) PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    max_cost_per_call_cents  INTEGER NOT NULL DEFAULT 1000 CHECK (max_cost_per_call_cents >= 0),
    max_monthly_spend_cents  INTEGER NOT NULL DEFAULT 10000 CHECK (max_monthly_spend_cents >= 0),
    warn_at_percent_per_call INTEGER NOT NULL DEFAULT 75 CHECK (warn_at_percent_per_call BETWEEN 1 AND 100),
    enable_auto_cutoff       BOOLEAN NOT NULL DEFAULT true,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- templates (seed §3, #13)
CREATE TABLE call_scenario_templates (
    id                          VARCHAR(100) PRIMARY KEY,
    name                        VARCHAR(255) NOT NULL,
    description                 TEXT,
    persona_id                  VARCHAR(100) REFERENCES personas(id) ON DELETE SET NULL,
    scenario_prompt             TEXT NOT NULL,
    category                    VARCHAR(100),
    suggested_duration_seconds  INTEGER CHECK (suggested_duration_seconds > 0),
    is_active                   BOOLEAN NOT NULL DEFAULT true,
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- updated_at triggers
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'admin_users', 'personas', 'user_persona_relationships',
                             'user_credits', 'calls', 'scheduled_calls', 'user_budget_settings',
                             'call_scenario_templates']
    LOOP
        EXECUTE format('CREATE TRIGGER trg_%s_updated_at BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION set_updated_at()', t, t);
    END LOOP;
END;
$$;
