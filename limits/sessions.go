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
	// Each bound is looked at only once the table passes it, and only over
	// the sessions it concerns: an open is on the path of every stream a
	// peer opens, so under a flood of them (identities that cost nothing to
	// make) it must cost the node little more than the stream itself.
	if c.MaxHandshakingPerPeer > 0 && len(t.byPeer[p]) > c.MaxHandshakingPerPeer {
		sc := silentScan{fresh: s}
		sc.add(t.byPeer[p])
		if v := sc.over(c.MaxHandshakingPerPeer); v != nil {
			victims = append(victims, t.remove(v))
		}
	}
	if c.MaxHandshaking > 0 && t.n > c.MaxHandshaking {
		sc := silentScan{fresh: s}
		for _, list := range t.byPeer {
			sc.add(list)
		}
		if v := sc.over(c.MaxHandshaking); v != nil {
			victims = append(victims, t.remove(v))
		}
	}
	if c.MaxSessions > 0 && t.n > c.MaxSessions {
		if v := t.busiestPeers(s); v != nil {
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

// silentScan finds, over the lists given to add, the oldest session
// other than fresh that has not sent a request yet, and counts those that
// have not. Each session's activity is read once, and nothing is copied.
type silentScan struct {
	fresh    *Session
	n        int
	oldest   *Session
	oldestAt time.Time
}

func (c *silentScan) add(list []*Session) {
	for _, x := range list {
		a := x.activity()
		if a.Requests > 0 {
			continue
		}
		c.n++
		if x != c.fresh && (c.oldest == nil || a.Opened.Before(c.oldestAt)) {
			c.oldest, c.oldestAt = x, a.Opened
		}
	}
}

// over returns the oldest silent session if more than max are silent.
func (c *silentScan) over(max int) *Session {
	if c.n <= max {
		return nil
	}
	return c.oldest
}

// busiestPeers returns the session to evict when there are too many: of
// the peers holding the most sessions, the session that has not sent a
// request the longest, else the one idle the longest, else the least
// recently active (see OpenSession). Only those peers' sessions are read.
// t.mu must be held.
func (t *sessionTable) busiestPeers(fresh *Session) *Session {
	count := func(p peer.ID) int {
		n := len(t.byPeer[p])
		if p == fresh.p {
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
	rank := func(a transport.Activity) (int, time.Time) {
		switch {
		case a.Requests == 0:
			return 0, a.Opened
		case a.InFlight == 0:
			return 1, a.Last
		}
		return 2, a.Last
	}
	var best *Session
	var br int
	var bat time.Time
	for p, list := range t.byPeer {
		if count(p) != most {
			continue
		}
		for _, x := range list {
			if x == fresh {
				continue
			}
			r, at := rank(x.activity())
			if best == nil || r < br || r == br && at.Before(bat) {
				best, br, bat = x, r, at
			}
		}
	}
	return best
}
