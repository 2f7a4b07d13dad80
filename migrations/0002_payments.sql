-- Payments: purchases of credit plans (card through Stripe Checkout, crypto through NOWPayments,
-- Telegram sales recorded by an operator), processor callbacks seen, buyers' billing details,
-- account flags (refunds and chargebacks), and invoices / credit notes with gapless numbers.
--
-- Credits for a paid purchase move from the system account `sales` (seeded by 0001) to the
-- customer, with the idempotency key `purchase:<id>` (scope `payment`); a refund or a lost dispute
-- moves them back with `refund:<id>`. So a purchase can be credited once and reversed once, ever.

CREATE TABLE purchases (
    id              uuid PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (id),
    plan_id         uuid NOT NULL REFERENCES plans (id),
    -- The plan's terms, fixed at creation (a plan never changes them, but the purchase says what
    -- was sold on its own).
    plan_name       text NOT NULL,
    credits         numeric NOT NULL CHECK (credits > 0 AND scale(credits) <= 18),
    amount_usd      numeric NOT NULL CHECK (amount_usd > 0 AND scale(amount_usd) <= 2),
    method          text NOT NULL CHECK (method IN ('card', 'crypto', 'telegram')),
    -- card: USD; crypto: BTC, ETH, USDT_TRC20, USDT_ERC20, USDC_ERC20; telegram: as recorded.
    currency        text,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'paid', 'held', 'expired', 'failed', 'refunded')),
    status_reason   text,
    -- The processor (stripe, nowpayments, telegram) and its id for this payment (Checkout Session
    -- id, NOWPayments payment id); the Stripe PaymentIntent once known (refunds and disputes name it).
    provider        text NOT NULL,
    provider_ref    text,
    payment_intent  text,
    checkout_url    text,
    pay_address     text,
    pay_amount      numeric CHECK (pay_amount > 0),
    pay_currency    text,
    network         text,
    -- What the processor last reported (crypto: the amount actually received, its status).
    received_amount numeric CHECK (received_amount >= 0),
    provider_status text,
    reference       text,
    -- Credits actually granted (the plan's, or the share received under CRYPTO_UNDERPAY_POLICY).
    credited        numeric CHECK (credited > 0),
    review_note     text,
    invoice_number  text,
    credit_note_number text,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    paid_at         timestamptz,
    refunded_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_ref),
    CHECK ((status IN ('paid', 'refunded')) = (credited IS NOT NULL AND invoice_number IS NOT NULL))
);
CREATE INDEX purchases_account ON purchases (account_id, created_at DESC, id DESC);
CREATE INDEX purchases_pending ON purchases (expires_at) WHERE status = 'pending';
CREATE INDEX purchases_intent ON purchases (payment_intent) WHERE payment_intent IS NOT NULL;

-- Status only moves forward: pending -> paid | held | expired | failed; held -> paid | failed;
-- paid -> refunded. The control plane checks this under the row lock; this is the backstop.
CREATE FUNCTION purchase_status_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'pending' AND NEW.status IN ('paid', 'held', 'expired', 'failed'))
        OR (OLD.status = 'held' AND NEW.status IN ('paid', 'failed'))
        OR (OLD.status = 'paid' AND NEW.status = 'refunded')
    ) THEN
        RAISE EXCEPTION 'purchase %: status % -> % is not allowed', OLD.id, OLD.status, NEW.status;
    END IF;
    IF OLD.credited IS NOT NULL AND NEW.credited IS DISTINCT FROM OLD.credited THEN
        RAISE EXCEPTION 'purchase %: credited is fixed once paid', OLD.id;
    END IF;
    IF OLD.invoice_number IS NOT NULL AND NEW.invoice_number IS DISTINCT FROM OLD.invoice_number THEN
        RAISE EXCEPTION 'purchase %: the invoice number is fixed once issued', OLD.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER purchases_status_forward BEFORE UPDATE ON purchases
    FOR EACH ROW EXECUTE FUNCTION purchase_status_forward();

-- Every processor callback applied, by the processor's event id (Stripe: the event id;
-- NOWPayments: payment id, status and amount received), recorded in the transaction that applies
-- it: a redelivery finds its row and changes nothing.
CREATE TABLE payment_events (
    provider    text NOT NULL,
    event_id    text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 300),
    event_type  text NOT NULL,
    purchase_id uuid REFERENCES purchases (id),
    outcome     text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX payment_events_purchase ON payment_events (purchase_id, received_at);

-- The buyer's details printed on invoices (the account's name and email when absent).
CREATE TABLE billing_details (
    account_id uuid PRIMARY KEY REFERENCES accounts (id),
    name       text,
    address    text,
    tax_id     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Reasons to look at an account: refunds, chargebacks, disputes. Append-only.
CREATE TABLE account_flags (
    id          bigserial PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id),
    reason      text NOT NULL,
    purchase_id uuid REFERENCES purchases (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_flags_account ON account_flags (account_id, id DESC);

-- Gapless numbering: one counter row per series (e.g. INV-2026, CN-2026), incremented by
-- INSERT ... ON CONFLICT DO UPDATE ... RETURNING inside the transaction that issues the document.
-- The row lock is held to commit; a rollback undoes the increment, so no number is skipped.
CREATE TABLE invoice_series (
    series      text PRIMARY KEY,
    last_number bigint NOT NULL CHECK (last_number > 0)
);

-- Invoices and credit notes. The document (seller, buyer, lines, totals) is frozen at issue.
CREATE TABLE invoices (
    number      text PRIMARY KEY,
    series      text NOT NULL REFERENCES invoice_series (series),
    seq         bigint NOT NULL CHECK (seq > 0),
    kind        text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    purchase_id uuid NOT NULL REFERENCES purchases (id),
    account_id  uuid NOT NULL REFERENCES accounts (id),
    corrects    text REFERENCES invoices (number),
    document    jsonb NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (series, seq),
    UNIQUE (purchase_id, kind),
    CHECK ((kind = 'credit_note') = (corrects IS NOT NULL))
);
CREATE INDEX invoices_account ON invoices (account_id, issued_at DESC, number DESC);

-- Issued documents are immutable.
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER account_flags_append_only BEFORE UPDATE OR DELETE ON account_flags
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
