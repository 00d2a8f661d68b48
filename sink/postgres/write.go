package postgres

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

// write stores a batch's changes in version schema s, in tx: the events
// and the new transfers by COPY, the rest in one round trip of
// statements over arrays.
func write(ctx context.Context, tx pgx.Tx, s string, c *changes) error {
	if err := copyEvents(ctx, tx, s, c.events); err != nil {
		return err
	}
	if err := copyTransfers(ctx, tx, s, c.transfers); err != nil {
		return err
	}
	b := &pgx.Batch{}
	queueAccounts(b, s, c.accounts)
	queueUpdates(b, s, c.updates)
	queueVolumes(b, s, c.volumes)
	queueOffsets(b, s, c.offsets)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write to %s: %w", s, err)
	}
	return nil
}

func copyEvents(ctx context.Context, tx pgx.Tx, s string, events []eventRow) error {
	rows := make([][]any, len(events))
	for i, e := range events {
		rows[i] = []any{e.Shard, int64(e.Seq), string(e.Type), e.Time, int64(e.RaftIndex), string(e.Data),
			string(e.Balances), e.PrevHash, e.Hash}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{s, "events"}, columnNames("events"), pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("write %s.events: %w", s, err)
	}
	return nil
}

func copyTransfers(ctx context.Context, tx pgx.Tx, s string, ts []*transferRow) error {
	if len(ts) == 0 {
		return nil
	}
	rows := make([][]any, len(ts))
	for i, r := range ts {
		var resolvedSeq *int64
		if r.ResolvedSeq != nil {
			resolvedSeq = ptr(int64(*r.ResolvedSeq))
		}
		rows[i] = []any{r.Shard, r.ID, r.Debit, r.Credit, r.Amount, r.Currency, string(r.Status),
			nullString(string(r.Result)), nullString(r.PendingID), r.PeerShard, int64(r.Seq), r.Time, r.ExpiresAt,
			resolvedSeq, nullString(r.ResolvedBy), r.ResolvedAmount}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{s, "transfers"}, columnNames("transfers"), pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("write %s.transfers: %w", s, err)
	}
	return nil
}

// queueAccounts upserts the accounts; a row only moves forwards (seq),
// which holds anyway since events come once, in order.
func queueAccounts(b *pgx.Batch, s string, accounts map[accountKey]*accountRow) {
	if len(accounts) == 0 {
		return
	}
	var (
		shard                        []int32
		id, cur                      []string
		bal, avail, dp, cp, dpe, cpe []int64
		closed                       []bool
		seq                          []int64
	)
	keys := make([]accountKey, 0, len(accounts))
	for k := range accounts {
		keys = append(keys, k)
	}
	// A fixed order keeps two writers' row locks in one order.
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Shard != b.Shard {
			return a.Shard < b.Shard
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Currency < b.Currency
	})
	for _, k := range keys {
		a := accounts[k]
		shard, id, cur = append(shard, int32(a.Shard)), append(id, a.ID), append(cur, a.Currency)
		bal, avail = append(bal, a.Balance), append(avail, a.Available)
		dp, cp, dpe, cpe = append(dp, a.DebitsPosted), append(cp, a.CreditsPosted), append(dpe, a.DebitsPending),
			append(cpe, a.CreditsPending)
		closed, seq = append(closed, a.Closed), append(seq, int64(a.Seq))
	}
	b.Queue(`INSERT INTO `+s+`.accounts AS a (shard, id, currency, balance, available, debits_posted, credits_posted,
			debits_pending, credits_pending, closed, seq)
		SELECT * FROM unnest($1::integer[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
			$7::bigint[], $8::bigint[], $9::bigint[], $10::boolean[], $11::bigint[])
		ON CONFLICT (shard, id, currency) DO UPDATE SET balance = excluded.balance, available = excluded.available,
			debits_posted = excluded.debits_posted, credits_posted = excluded.credits_posted,
			debits_pending = excluded.debits_pending, credits_pending = excluded.credits_pending,
			closed = a.closed OR excluded.closed, seq = excluded.seq
		WHERE a.seq < excluded.seq`,
		shard, id, cur, bal, avail, dp, cp, dpe, cpe, closed, seq)
}

// queueUpdates settles transfers inserted by earlier batches.
func queueUpdates(b *pgx.Batch, s string, updates map[transferKey]*transferUpdate) {
	if len(updates) == 0 {
		return
	}
	var (
		shard           []int32
		id, status, res []string
		by              []*string
		rseq, ramt      []*int64
	)
	for _, u := range updates {
		shard, id, status = append(shard, int32(u.Shard)), append(id, u.ID), append(status, string(u.Status))
		res, by = append(res, string(u.Result)), append(by, nullString(u.ResolvedBy))
		var sq *int64
		if u.ResolvedSeq != nil {
			sq = ptr(int64(*u.ResolvedSeq))
		}
		rseq, ramt = append(rseq, sq), append(ramt, u.ResolvedAmount)
	}
	b.Queue(`UPDATE `+s+`.transfers AS t SET status = u.status, result = nullif(u.result, ''),
			resolved_seq = u.rseq, resolved_by = u.by, resolved_amount = u.amt
		FROM unnest($1::integer[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[])
			AS u(shard, id, status, result, rseq, by, amt)
		WHERE t.shard = u.shard AND t.id = u.id`,
		shard, id, status, res, rseq, by, ramt)
}

// queueVolumes adds the batch's postings to the daily aggregate. It is
// in the same transaction as the offsets, so nothing is counted twice.
func queueVolumes(b *pgx.Batch, s string, volumes map[volumeKey]*volume) {
	if len(volumes) == 0 {
		return
	}
	var (
		cur, amt []string
		day      []time.Time
		n        []int64
	)
	for k, v := range volumes {
		cur, day = append(cur, k.Currency), append(day, k.Day)
		n, amt = append(n, v.Count), append(amt, v.Amount.String())
	}
	b.Queue(`INSERT INTO `+s+`.daily_volume AS d (currency, day, transfers, volume)
		SELECT c, d, n, v::numeric FROM unnest($1::text[], $2::date[], $3::bigint[], $4::text[]) AS u(c, d, n, v)
		ON CONFLICT (currency, day) DO UPDATE SET transfers = d.transfers + excluded.transfers,
			volume = d.volume + excluded.volume`,
		cur, day, n, amt)
}

func queueOffsets(b *pgx.Batch, s string, offsets map[int]offset) {
	var (
		shard []int32
		seq   []int64
		hash  []string
	)
	for sh, o := range offsets {
		shard, seq, hash = append(shard, int32(sh)), append(seq, int64(o.Seq)), append(hash, o.Hash.String())
	}
	b.Queue(`INSERT INTO `+s+`.offsets AS o (shard, seq, hash)
		SELECT * FROM unnest($1::integer[], $2::bigint[], $3::text[])
		ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`,
		shard, seq, hash)
}

func columnNames(table string) []string {
	for _, t := range tables {
		if t.name == table {
			out := make([]string, len(t.columns))
			for i, c := range t.columns {
				out[i] = c.name
			}
			return out
		}
	}
	panic("postgres: no table " + table)
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
