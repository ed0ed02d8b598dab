package limits

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mcpmesh/mcpmesh/mcp/transport"
)

// sessionTable is the inbound MCP sessions the node holds, for making room
// (see OpenSession).
type sessionTable struct {
	mu     sync.Mutex
	byPeer map[peer.ID][]*Session
	n      int
}

// Session is an inbound MCP session the node holds, as the limiter sees it.
type Session struct {
	l        *Limiter
	p        peer.ID
	activity func() transport.Activity
	evict    func()
	gone     bool // closed or evicted: no longer in the table
}

// OpenSession records a session that p opened on one of the node's servers
// and makes room for it: activity says how the session stands (its
// transport.Conn's Activity), evict ends it (its Conn's Abort). The caller
// must Close the session when it ends.
//
// Room is made by evicting, outside the limiter's lock, before
// OpenSession returns:
//
//   - past MaxHandshakingPerPeer sessions of p that have not sent a
//     request, p's oldest such session;
//   - past MaxHandshaking such sessions of all peers, the oldest of them;
//   - past MaxSessions in all, one session of the peer that holds the
//     most: the oldest that has not sent a request, else the one idle the
//     longest (nothing in flight), else the one whose last request is the
//     oldest.
//
// So a peer with one session is never evicted while another holds more,
// and the sessions that cost nothing to make (new identities, streams that
// never speak) go first. The new session itself is never chosen.
func (l *Limiter) OpenSession(p peer.ID, activity func() transport.Activity, evict func()) *Session {
	s := &Session{l: l, p: p, activity: activity, evict: evict}
	if p == l.self {
		s.gone = true
		return s
	}
	c := l.cfg
	t := &l.sessions
	var victims []*Session
	t.mu.Lock()
	if t.byPeer == nil {
		t.byPeer = map[peer.ID][]*Session{}
	}
	t.byPeer[p] = append(t.byPeer[p], s)
	t.n++
	snap := t.snapshot(s)
	if c.MaxHandshakingPerPeer > 0 {
		if v := snap.silent(p, c.MaxHandshakingPerPeer); v != nil {
			victims = append(victims, t.remove(v))
		}
	}
	if c.MaxHandshaking > 0 {
		if v := snap.silent("", c.MaxHandshaking); v != nil && !v.gone {
			victims = append(victims, t.remove(v))
		}
	}
	if c.MaxSessions > 0 && t.n > c.MaxSessions {
		if v := snap.busiestPeers(t); v != nil {
			victims = append(victims, t.remove(v))
		}
	}
	t.mu.Unlock()
	for _, v := range victims {
		log.Debugw("session evicted to make room", "peer", v.p, "for", p)
		v.evict()
	}
	return s
}

// Close forgets the session (it ended).
func (s *Session) Close() {
	t := &s.l.sessions
	t.mu.Lock()
	if !s.gone {
		t.remove(s)
	}
	t.mu.Unlock()
}

// Sessions returns how many inbound sessions the node holds.
func (l *Limiter) Sessions() int {
	l.sessions.mu.Lock()
	defer l.sessions.mu.Unlock()
	return l.sessions.n
}

// remove takes s out of the table and returns it. t.mu must be held.
func (t *sessionTable) remove(s *Session) *Session {
	list := t.byPeer[s.p]
	for i, x := range list {
		if x == s {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(t.byPeer, s.p)
	} else {
		t.byPeer[s.p] = list
	}
	t.n--
	s.gone = true
	return s
}

// sessionsView is the table's sessions with their activity read once, for
// choosing whom to evict.
type sessionsView struct {
	fresh *Session // the session being opened: never chosen
	all   []viewed
}

type viewed struct {
	s *Session
	a transport.Activity
}

func (t *sessionTable) snapshot(fresh *Session) *sessionsView {
	v := &sessionsView{fresh: fresh, all: make([]viewed, 0, t.n)}
	for _, list := range t.byPeer {
		for _, s := range list {
			v.all = append(v.all, viewed{s: s, a: s.activity()})
		}
	}
	return v
}

// silent returns the oldest session that has not sent a request yet, of p
// (or of anyone, for ""), if there are more than max such sessions.
func (v *sessionsView) silent(p peer.ID, max int) *Session {
	n := 0
	var oldest *viewed
	for i := range v.all {
		x := &v.all[i]
		if x.s.gone || x.a.Requests > 0 || (p != "" && x.s.p != p) {
			continue
		}
		n++
		if x.s != v.fresh && (oldest == nil || x.a.Opened.Before(oldest.a.Opened)) {
			oldest = x
		}
	}
	if n <= max || oldest == nil {
		return nil
	}
	return oldest.s
}

// busiestPeers returns the session to evict when there are too many: of
// the peers holding the most sessions, the session that has not sent a
// request the longest, else the one idle the longest, else the least
// recently active (see OpenSession).
func (v *sessionsView) busiestPeers(t *sessionTable) *Session {
	count := func(p peer.ID) int {
		n := len(t.byPeer[p])
		if p == v.fresh.p {
			n-- // the new session does not count against its peer here
		}
		return n
	}
	most := 0
	for p := range t.byPeer {
		most = max(most, count(p))
	}
	if most == 0 {
		return nil
	}
	rank := func(x *viewed) (int, time.Time) {
		switch {
		case x.a.Requests == 0:
			return 0, x.a.Opened
		case x.a.InFlight == 0:
			return 1, x.a.Last
		}
		return 2, x.a.Last
	}
	var best *viewed
	for i := range v.all {
		x := &v.all[i]
		if x.s.gone || x.s == v.fresh || count(x.s.p) != most {
			continue
		}
		if best == nil {
			best = x
			continue
		}
		r, at := rank(x)
		br, bat := rank(best)
		if r < br || r == br && at.Before(bat) {
			best = x
		}
	}
	if best == nil {
		return nil
	}
	return best.s
}
