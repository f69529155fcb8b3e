package mvcc

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// WatchResponse is what the hub hands a watch stream: events of one or more
// revisions for one watcher, a progress notification (no events), or a
// cancellation because the watcher fell behind compaction.
type WatchResponse struct {
	WatchID         int64
	Events          []*mvccpb.Event
	Revision        int64 // header revision
	CompactRevision int64
}

// streamBuffer bounds what a watch stream may have queued. A watcher whose
// events do not fit is moved aside and later caught up from disk, so a slow
// client never blocks writes or other watchers, and memory stays bounded:
// at most twice this, as the stream's sender takes what is queued (to join
// a watcher's responses into one message) while the hub refills it.
const streamBuffer = 256

// catchUpRevs bounds how many revisions one catch-up response carries.
const catchUpRevs = 1000

// WatchStream groups the watchers of one client stream; ids are per stream.
type WatchStream struct {
	hub      *hub
	ch       chan WatchResponse
	watchers map[int64]*watcher // guarded by hub.mu
	nextID   int64
	closed   bool
}

type watcher struct {
	id       int64
	ws       *WatchStream
	key, end []byte // end nil: one key; empty: every key >= key
	minRev   int64  // next revision this watcher needs
	prevKV   bool
	noPut    bool
	noDelete bool
	synced   bool
	start    int64
}

func (w *watcher) matches(key []byte) bool {
	switch {
	case w.end == nil:
		return bytes.Equal(key, w.key)
	case len(w.end) == 0:
		return bytes.Compare(key, w.key) >= 0
	}
	return bytes.Compare(key, w.key) >= 0 && bytes.Compare(key, w.end) < 0
}

// filter returns the events w wants, or nil.
func (w *watcher) filter(evs []*mvccpb.Event) []*mvccpb.Event {
	var out []*mvccpb.Event
	for _, ev := range evs {
		if ev.Kv.ModRevision < w.minRev || !w.matches(ev.Kv.Key) {
			continue
		}
		if (ev.Type == mvccpb.PUT && w.noPut) || (ev.Type == mvccpb.DELETE && w.noDelete) {
			continue
		}
		out = append(out, ev)
	}
	return out
}

type hub struct {
	s        *Store
	mu       sync.Mutex
	rev      int64                        // last revision published to watchers
	byKey    map[string]map[*watcher]bool // synced single-key watchers
	ranges   map[*watcher]bool            // synced range watchers
	unsynced map[*watcher]bool
	// prevWatchers counts the watchers that asked for prev_kv; while there
	// are none, apply keeps no values in its meta cache for them.
	prevWatchers atomic.Int64
	kickCh       chan struct{}
	stopCh       chan struct{}
	wg           sync.WaitGroup
}

func newHub(s *Store) *hub {
	h := &hub{
		s: s, rev: s.rev,
		byKey: map[string]map[*watcher]bool{}, ranges: map[*watcher]bool{}, unsynced: map[*watcher]bool{},
		kickCh: make(chan struct{}, 1), stopCh: make(chan struct{}),
	}
	h.wg.Add(1)
	go h.syncLoop()
	return h
}

func (h *hub) close() {
	select {
	case <-h.stopCh:
	default:
		close(h.stopCh)
	}
	h.wg.Wait()
}

// NewWatchStream opens a stream of watchers.
func (s *Store) NewWatchStream() *WatchStream {
	return &WatchStream{hub: s.hub, ch: make(chan WatchResponse, streamBuffer), watchers: map[int64]*watcher{}}
}

// Chan delivers the stream's responses in order.
func (ws *WatchStream) Chan() <-chan WatchResponse { return ws.ch }

// WatchOptions are a watcher's filters.
type WatchOptions struct {
	PrevKV, NoPut, NoDelete bool
}

// Watch adds a watcher on [key, end) from startRev (0: from the next
// revision). id 0 asks for the next free id. It returns the id and the
// current revision for the created response.
func (ws *WatchStream) Watch(id int64, key, end []byte, startRev int64, o WatchOptions) (int64, int64, error) {
	h := ws.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if ws.closed {
		// A client's stream can end while its request to watch is still
		// being handled; a watcher added now would never be removed.
		return -1, h.rev, ErrStreamClosed
	}
	if len(end) > 0 && bytes.Compare(key, end) >= 0 {
		return -1, h.rev, ErrEmptyWatchRange
	}
	if id == 0 {
		for ws.watchers[ws.nextID] != nil {
			ws.nextID++
		}
		id = ws.nextID
		ws.nextID++
	} else if ws.watchers[id] != nil {
		return -1, h.rev, ErrDuplicateWatch
	}
	w := &watcher{id: id, ws: ws, key: key, end: end, prevKV: o.PrevKV, noPut: o.NoPut, noDelete: o.NoDelete, start: startRev}
	ws.watchers[id] = w
	if w.prevKV {
		h.prevWatchers.Add(1)
	}
	if startRev == 0 || startRev > h.rev {
		w.minRev = max(h.rev+1, startRev)
		h.addSynced(w)
	} else {
		w.minRev = startRev
		h.unsynced[w] = true
		h.kick()
	}
	return id, h.rev, nil
}

// Cancel removes watcher id; false if the stream has no such watcher.
func (ws *WatchStream) Cancel(id int64) bool {
	h := ws.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	w := ws.watchers[id]
	if w == nil {
		return false
	}
	delete(ws.watchers, id)
	h.remove(w)
	return true
}

// Close removes every watcher of the stream.
func (ws *WatchStream) Close() {
	h := ws.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range ws.watchers {
		h.remove(w)
	}
	ws.watchers = map[int64]*watcher{}
	ws.closed = true
}

// RequestProgress queues a progress notification (id -1 for the whole
// stream) at the current revision, but only when the watchers concerned are
// synced: a progress revision must never run ahead of undelivered events.
// It reports whether one was queued.
func (ws *WatchStream) RequestProgress(id int64) bool {
	h := ws.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	check := func(w *watcher) bool { return w.synced && h.rev >= w.start }
	if id == -1 {
		if len(ws.watchers) == 0 {
			return false
		}
		for _, w := range ws.watchers {
			if !check(w) {
				return false
			}
		}
	} else if w := ws.watchers[id]; w == nil || !check(w) {
		return false
	}
	select {
	case ws.ch <- WatchResponse{WatchID: id, Revision: h.rev}:
		return true
	default:
		return false
	}
}

func (h *hub) addSynced(w *watcher) {
	w.synced = true
	if w.end == nil {
		m := h.byKey[string(w.key)]
		if m == nil {
			m = map[*watcher]bool{}
			h.byKey[string(w.key)] = m
		}
		m[w] = true
	} else {
		h.ranges[w] = true
	}
}

func (h *hub) removeSynced(w *watcher) {
	w.synced = false
	if w.end == nil {
		if m := h.byKey[string(w.key)]; m != nil {
			delete(m, w)
			if len(m) == 0 {
				delete(h.byKey, string(w.key))
			}
		}
	} else {
		delete(h.ranges, w)
	}
}

// remove forgets w; every watcher is removed once, by Cancel or Close.
func (h *hub) remove(w *watcher) {
	if w.prevKV {
		h.prevWatchers.Add(-1)
	}
	if w.synced {
		h.removeSynced(w)
	} else {
		delete(h.unsynced, w)
	}
}

func (h *hub) kick() {
	select {
	case h.kickCh <- struct{}{}:
	default:
	}
}

// resync moves every synced watcher aside after the state jumped to rev (a
// snapshot restore): each catches up from the restored event log from the
// revision it needs next, or learns that it was compacted away.
func (h *hub) resync(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []*watcher
	for _, m := range h.byKey {
		for w := range m {
			all = append(all, w)
		}
	}
	for w := range h.ranges {
		all = append(all, w)
	}
	for _, w := range all {
		h.removeSynced(w)
		h.unsynced[w] = true
	}
	h.rev = rev
	h.kick()
}

// notify publishes newly committed revisions to synced watchers, one
// response per revision, as etcd does.
func (h *hub) notify(batches []revEvents, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.byKey) == 0 && len(h.ranges) == 0 {
		h.rev = rev // nobody synced to tell: the common case for plain writes
		return
	}
	// Watchers of the same keys share each event's previous version: one
	// read per event, not per watcher, and none when apply had it cached.
	prevs := prevKVs{s: h.s}
	defer prevs.release()
	for _, b := range batches {
		prevs.known = b.prevs
		per := map[*watcher][]*mvccpb.Event{}
		var order []*watcher
		add := func(w *watcher, ev *mvccpb.Event) {
			if _, ok := per[w]; !ok {
				order = append(order, w)
			}
			per[w] = append(per[w], ev)
		}
		for _, ev := range b.events {
			for w := range h.byKey[string(ev.Kv.Key)] {
				add(w, ev)
			}
			for w := range h.ranges {
				if w.matches(ev.Kv.Key) {
					add(w, ev)
				}
			}
		}
		for _, w := range order {
			evs := w.filter(per[w])
			if len(evs) == 0 {
				continue
			}
			if w.prevKV {
				evs = prevs.with(evs, b.events)
			}
			select {
			case w.ws.ch <- WatchResponse{WatchID: w.id, Events: evs, Revision: b.rev}:
				w.minRev = b.rev + 1
			default:
				// The stream is full: catch this watcher up from disk later.
				h.removeSynced(w)
				w.minRev = b.rev
				h.unsynced[w] = true
				h.kick()
			}
		}
	}
	h.rev = rev
}

// prevKVs finds events' previous versions, each once: from what apply
// cached, else read from a view taken on the first miss.
type prevKVs struct {
	s     *Store
	known []*mvccpb.KeyValue // the batch's cached previous versions, parallel to its events
	v     *view
	done  func()
	seen  map[*mvccpb.Event]*mvccpb.KeyValue
}

// with returns copies of evs, a subset of all (the revision's events, in
// order), with prev_kv set from the version before each event, as etcd does
// for watchers that ask for it.
func (p *prevKVs) with(evs, all []*mvccpb.Event) []*mvccpb.Event {
	out := make([]*mvccpb.Event, len(evs))
	j := 0 // evs keep all's order: one pass finds each event's index in all
	for i, ev := range evs {
		for j < len(all) && all[j] != ev {
			j++
		}
		e := &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
		if !(ev.Type == mvccpb.PUT && ev.Kv.CreateRevision == ev.Kv.ModRevision) {
			if j < len(p.known) && p.known[j] != nil {
				e.PrevKv = p.known[j]
			} else {
				e.PrevKv = p.read(ev)
			}
		}
		out[i] = e
	}
	return out
}

// read reads ev's previous version from the applied state.
func (p *prevKVs) read(ev *mvccpb.Event) *mvccpb.KeyValue {
	if kv, ok := p.seen[ev]; ok {
		return kv
	}
	if p.v == nil {
		p.v, p.done = p.s.readView()
	}
	kv, err := p.v.kvAt(ev.Kv.Key, ev.Kv.ModRevision-1)
	if err != nil {
		kv = nil
	}
	if p.seen == nil {
		p.seen = map[*mvccpb.Event]*mvccpb.KeyValue{}
	}
	p.seen[ev] = kv
	return kv
}

func (p *prevKVs) release() {
	if p.done != nil {
		p.done()
	}
}

// syncInterval is how often unsynced watchers are caught up from the event
// log (etcd: 100 ms); a variable for tests.
var syncInterval = 100 * time.Millisecond

// fullRetry is how soon a watcher whose stream was still full is tried
// again, as etcd retries its "victims" every 10 ms. Left to the next sync
// tick, every watcher that found its stream full once waited 100 ms or
// more, which set the Kubernetes profile's watch delivery p99.
const fullRetry = 10 * time.Millisecond

// syncLoop catches unsynced watchers up from the event log on disk.
func (h *hub) syncLoop() {
	defer h.wg.Done()
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-h.stopCh:
			return
		case <-h.kickCh:
		case <-t.C:
		case <-retry:
		}
		retry = nil
		if h.syncOnce() {
			retry = time.After(fullRetry)
		}
	}
}

// syncOnce tries to catch every unsynced watcher up, and reports whether
// one found its stream full.
func (h *hub) syncOnce() (full bool) {
	h.mu.Lock()
	if len(h.unsynced) == 0 {
		h.mu.Unlock()
		return false
	}
	ws := make([]*watcher, 0, len(h.unsynced))
	for w := range h.unsynced {
		ws = append(ws, w)
	}
	h.mu.Unlock()

	v, release := h.s.readView()
	defer release()
	for _, w := range ws {
		if h.catchUp(v, w) {
			full = true
		}
	}
	return full
}

// catchUp sends w the events after its minRev, from v, and moves it to the
// synced set once nothing is left behind. It reports whether w's stream
// was full.
func (h *hub) catchUp(v *view, w *watcher) (full bool) {
	h.mu.Lock()
	if !h.unsynced[w] {
		h.mu.Unlock()
		return false
	}
	from, hubRev := w.minRev, h.rev
	h.mu.Unlock()

	if from < v.compactRev {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.unsynced[w] {
			return false
		}
		select {
		case w.ws.ch <- WatchResponse{WatchID: w.id, CompactRevision: v.compactRev}:
			delete(h.unsynced, w) // the id stays reserved until the client cancels it
			return false
		default:
			return true
		}
	}
	to := min(hubRev, v.rev, from+catchUpRevs-1)
	var evs []*mvccpb.Event
	if from <= to {
		var err error
		if evs, err = v.events(from, to); err != nil {
			h.s.log.Error("watch catch-up read failed", "err", err)
			return false
		}
		evs = w.filter(evs)
		if w.prevKV {
			evs = (&prevKVs{v: v}).with(evs, nil)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.unsynced[w] {
		return false
	}
	if len(evs) > 0 {
		select {
		case w.ws.ch <- WatchResponse{WatchID: w.id, Events: evs, Revision: hubRev}:
		default:
			return true // still full: tried again in fullRetry
		}
	}
	w.minRev = to + 1
	if w.minRev > h.rev {
		delete(h.unsynced, w)
		h.addSynced(w)
	} else {
		h.kick()
	}
	return false
}

// events reads the event log for revisions [from, to].
func (v *view) events(from, to int64) ([]*mvccpb.Event, error) {
	it, err := v.r.NewIter(&pebble.IterOptions{LowerBound: revKey(Rev{Main: from}), UpperBound: revKey(Rev{Main: to + 1})})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var evs []*mvccpb.Event
	for ok := it.First(); ok; ok = it.Next() {
		r := decodeRevKey(it.Key())
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return nil, err
		}
		kv := &mvccpb.KeyValue{Key: append([]byte(nil), rec.Key...), ModRevision: r.Main}
		ev := &mvccpb.Event{Type: mvccpb.DELETE, Kv: kv}
		if rec.Kind == kindPut {
			ev.Type = mvccpb.PUT
			kv.CreateRevision, kv.Version, kv.Lease = rec.Create, rec.Version, rec.Lease
			kv.Value = append([]byte(nil), rec.Value...)
		}
		evs = append(evs, ev)
	}
	return evs, it.Error()
}

// Watchers is the number of watchers of every stream.
func (s *Store) Watchers() int {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.ranges) + len(h.unsynced)
	for _, ws := range h.byKey {
		n += len(ws)
	}
	return n
}

// SlowWatchers is the number of watchers behind the store, waiting to be
// caught up from the event log (etcd_debugging_mvcc_slow_watcher_total).
func (s *Store) SlowWatchers() int {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.unsynced)
}
