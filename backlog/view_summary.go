package backlog

import "github.com/mqmesh/mqmesh/backlog/backlogpb"

type summaryKey struct {
	tier Tier
	idc  string
}

type summaryMark struct {
	summarizer string
	inc, seq   uint64
}

// ApplySummary records an IDC's summary of tier t (Summarizer) as that
// tier's word on the IDC: every node it names is applied as a notice of
// tier t (unless a nearer tier holds its entry), and every entry of tier t of the IDC it does not name leaves the
// view (its backlog ended, or it left the top K). A worker hears one shard
// per IDC, so the summary is all it knows of that IDC on that tier. It
// returns false for a summary older than the last one applied of the same
// summarizer and tier, or when tier t is not subscribed. Summaries are
// rate-limited at their source, so the tier's MaxRate does not apply.
func (v *View) ApplySummary(t Tier, s *backlogpb.Summary) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.subscribed != nil && !v.subscribed[t] {
		v.stats.Unsubscribed++
		return false
	}
	if v.summaries == nil {
		v.summaries = map[summaryKey]summaryMark{}
	}
	key := summaryKey{t, s.Idc}
	last, ok := v.summaries[key]
	if ok && last.summarizer == s.Summarizer && (s.Incarnation < last.inc || s.Incarnation == last.inc && s.Seq <= last.seq) {
		v.stats.Stale++
		return false
	}
	v.summaries[key] = summaryMark{summarizer: s.Summarizer, inc: s.Incarnation, seq: s.Seq}
	v.stats.Summaries++
	now := v.now()
	named := make(map[entryKey]bool, len(s.Nodes))
	for _, n := range s.Nodes {
		if n.Idc != s.Idc {
			continue
		}
		k := entryKey{n.Idc, n.Node, n.Queue}
		named[k] = true
		if e := v.entries[k]; e != nil && (e.Tier < t || e.inc == n.Incarnation && e.seq > n.Seq) {
			// A nearer tier's notices own the entry (more precise), or
			// the view heard newer of it (another tier's summary, sent
			// at another time): not out of order, just older.
			continue
		}
		v.applyLocked(t, n, now)
	}
	for k, e := range v.entries {
		if k.idc == s.Idc && e.Tier == t && !named[k] {
			delete(v.entries, k)
		}
	}
	return true
}
