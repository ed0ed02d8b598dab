package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/mcpmesh/mcpmesh/tasks"
)

// attacks lists the suite's attacks, in the order, after a control
// run with no attack (its ratios are the noise of the machine).
func attacks(cfg *config) []*attack {
	return []*attack{
		control(),
		amplification("keys", "tool-call arguments of small JSON keys", keysArgs, 1, cfg.ampInflight),
		amplification("keys-many-identities", "tool-call arguments of small JSON keys", keysArgs, cfg.ampIdentities, cfg.ampPerIdentity),
		amplification("nesting", "tool-call arguments nested as deep as the frame allows", nestedArgs, 1, cfg.ampInflight),
		amplification("strings", "tool-call arguments holding one long string", stringArgs, 1, cfg.ampInflight),
		idleStreams(),
		hopBudget(),
		pipelining(1),
		pipelining(cfg.pipeIdentities),
		jsonrpcIDs(cfg),
		portCollision(),
	}
}

// control is no attack at all: the good peers alone, twice.
func control() *attack {
	return &attack{
		name:  "0-control",
		title: "no attack: the good peers alone, clean window then a second one",
		run: func(ctx context.Context, _ *env, _ *report, st *stage) error {
			st.Ready()
			<-ctx.Done()
			return nil
		},
	}
}

// --- 1: memory amplification ---

// A tools/call frame is built once per attack and written for every call:
// its prefix holds everything but the id, which comes last.
func callPrefix(tool string, args []byte) []byte {
	var b bytes.Buffer
	b.WriteString(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"` + tool + `","arguments":`)
	b.Write(args)
	b.WriteString(`},"id":`)
	return b.Bytes()
}

func callSuffix(id int) []byte { return []byte(strconv.Itoa(id) + "}\n") }

// frameRoom is what a frame's arguments may take to stay just under limit.
func frameRoom(limit int) int { return limit - len(callPrefix("echo", nil)) - 64 }

// keysArgs fills the arguments with distinct small keys ("1a2b":0).
func keysArgs(limit int) ([]byte, string) {
	room := frameRoom(limit)
	var b bytes.Buffer
	b.Grow(room)
	b.WriteString(`{"text":"x"`)
	n := 0
	for ; ; n++ {
		k := `,"` + strconv.FormatInt(int64(n), 36) + `":0`
		if b.Len()+len(k)+1 > room {
			break
		}
		b.WriteString(k)
	}
	b.WriteByte('}')
	return b.Bytes(), fmt.Sprintf("%d keys", n)
}

// nestedArgs nests arrays as deep as the frame allows.
func nestedArgs(limit int) ([]byte, string) {
	head := `{"text":"x","deep":`
	depth := (frameRoom(limit) - len(head) - 1) / 2
	var b bytes.Buffer
	b.Grow(frameRoom(limit))
	b.WriteString(head)
	b.Write(bytes.Repeat([]byte("["), depth))
	b.Write(bytes.Repeat([]byte("]"), depth))
	b.WriteByte('}')
	return b.Bytes(), fmt.Sprintf("arrays nested %d deep", depth)
}

// stringArgs puts one long string beside the text.
func stringArgs(limit int) ([]byte, string) {
	head := `{"text":"x","pad":"`
	n := frameRoom(limit) - len(head) - 2
	return []byte(head + strings.Repeat("a", n) + `"}`), fmt.Sprintf("a string of %d bytes", n)
}

// amplification sends frames just under the daemon's size limit, with
// arguments that cost far more decoded than on the wire, perIdentity at a
// time from each of identities fresh identities, each on a session of its
// own, again as soon as each is answered.
func amplification(variant, what string, build func(limit int) ([]byte, string), identities, perIdentity int) *attack {
	return &attack{
		name:  "1-amplification-" + variant,
		title: fmt.Sprintf("%s, %d in flight from each of %d identities", what, perIdentity, identities),
		run: func(ctx context.Context, e *env, rep *report, st *stage) error {
			args, shape := build(e.cfg.maxMessage)
			prefix := callPrefix("echo", args)
			var sent, answered, refused, lost atomic.Int64
			var firstRefusal, firstLoss atomic.Value
			total := identities * perIdentity
			var cycled atomic.Int64
			var wg sync.WaitGroup
			var hosts []host.Host
			defer func() {
				for _, h := range hosts {
					h.Close()
				}
			}()
			for range identities {
				h, err := newIdentity(true)
				if err != nil {
					return err
				}
				hosts = append(hosts, h)
				for range perIdentity {
					wg.Go(func() {
						var rs *rawSession
						// The attack is in place once every sender has had
						// one frame answered (or its session lost): the
						// daemon has then paid for one of each in full.
						first := true
						done := func() {
							if first {
								first = false
								if cycled.Add(1) == int64(total) {
									st.Ready()
								}
							}
						}
						loss := func(err error) {
							if ctx.Err() == nil {
								lost.Add(1)
								firstLoss.CompareAndSwap(nil, err.Error())
							}
						}
						for id := 1; ctx.Err() == nil; id++ {
							if rs == nil {
								var err error
								if rs, err = openRaw(ctx, h, e.target, "node", true); err != nil {
									loss(err)
									done()
									sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
									continue
								}
							}
							if err := rs.write(prefix, callSuffix(id)); err != nil {
								loss(err)
								done()
								rs.reset()
								rs = nil
								continue
							}
							sent.Add(1)
							m, err := rs.replyTo([]byte(strconv.Itoa(id)), time.Now().Add(2*time.Minute))
							done()
							if err != nil {
								loss(err)
								rs.reset()
								rs = nil
								continue
							}
							answered.Add(1)
							if m.isError() {
								refused.Add(1)
								firstRefusal.CompareAndSwap(nil, m.errorMessage())
							}
						}
						if rs != nil {
							rs.reset()
						}
					})
				}
			}
			wg.Wait()
			rep.note("frames of %d bytes holding %s; %d sent, %d answered (%d with an error), %d sessions lost",
				len(prefix)+len(callSuffix(1)), shape, sent.Load(), answered.Load(), refused.Load(), lost.Load())
			if v := firstRefusal.Load(); v != nil {
				rep.note("first error answer: %.200s", v)
			}
			if v := firstLoss.Load(); v != nil {
				rep.note("first session lost: %.200s", v)
			}
			return nil
		},
	}
}

// --- 2: idle streams from throwaway identities ---

// idleStreams opens streams to the MCP protocol from many fresh identities,
// half of them writing one newline, half nothing at all (the protocol
// negotiated, no MCP byte), and holds them all open.
func idleStreams() *attack {
	return &attack{
		name:  "2-idle-streams",
		title: "fresh identities each holding streams to the MCP protocol open, idle (one newline or nothing)",
		run: func(ctx context.Context, e *env, rep *report, st *stage) error {
			k, per := e.cfg.idleIdentities, e.cfg.idleStreams
			type identity struct {
				h    host.Host
				held []network.Stream
				err  error
			}
			ids := make([]*identity, k)
			defer func() {
				for _, id := range ids {
					if id != nil && id.h != nil {
						id.h.Close() // resets its streams
					}
				}
			}()
			var wg sync.WaitGroup
			sem := make(chan struct{}, 8)
			start := time.Now()
			for i := range ids {
				id := &identity{}
				ids[i] = id
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					if id.h, id.err = newIdentity(true); id.err != nil {
						return
					}
					if id.err = connect(ctx, id.h, e.target, 10*time.Second); id.err != nil {
						return
					}
					for j := range per {
						sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						s, err := id.h.NewStream(sctx, e.target.ID, protocolOf("node"))
						cancel()
						if err != nil {
							continue
						}
						var b []byte // nothing: completes the protocol negotiation only
						if j%2 == 0 {
							b = []byte("\n")
						}
						s.SetWriteDeadline(time.Now().Add(5 * time.Second))
						if _, err := s.Write(b); err != nil {
							s.Reset()
							continue
						}
						id.held = append(id.held, s)
					}
				})
			}
			wg.Wait()
			opening := time.Since(start)
			if ctx.Err() != nil {
				return nil
			}
			// Which of them does the daemon still hold? A stream it reset
			// says so at once on a read; one it holds times out.
			sleepUntil(ctx, time.Now().Add(time.Second))
			opened, alive, failed := 0, 0, 0
			var firstErr error
			for _, id := range ids {
				if id.err != nil {
					failed++
					firstErr = cmpErr(firstErr, id.err)
					continue
				}
				opened += len(id.held)
				for _, s := range id.held {
					s.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
					_, err := s.Read(make([]byte, 1))
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
						alive++
					}
					s.SetReadDeadline(time.Time{})
				}
			}
			rep.note("%d identities × %d streams: %d opened in %v (%.0f a second), %d still held open by the daemon after 1 s; %d identities could not connect%s",
				k, per, opened, opening.Round(time.Millisecond), float64(opened)/opening.Seconds(), alive, failed, errSuffix(firstErr))
			st.Ready()
			<-ctx.Done()
			return nil
		},
	}
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " (first: " + err.Error() + ")"
}

// --- 3: a hop budget claimed by the caller ---

// claimedBudget is the hop budget the raw caller claims: far above any
// node's default (tasks.DefaultBudget).
const claimedBudget = 1000

// hopBudget makes one call whose task context claims a budget of 1000
// hops, and reads back, with `mcpmesh tasks --json`, what the daemon
// recorded for the task it served.
func hopBudget() *attack {
	return &attack{
		name:  "3-hop-budget",
		title: fmt.Sprintf("a raw call claiming a hop budget of %d in _meta[%q]", claimedBudget, tasks.MetaKey),
		run: func(ctx context.Context, e *env, rep *report, st *stage) error {
			defer st.Ready()
			h, rs, err := throwaway(ctx, e.target, "node")
			if err != nil {
				return err
			}
			defer h.Close()
			m := &tasks.Meta{ID: tasks.NewID(), Root: tasks.NewID(), Path: []string{h.ID().String()}, Budget: claimedBudget}
			meta := map[string]any{}
			m.Encode(meta)
			params, err := json.Marshal(map[string]any{"name": "echo", "arguments": map[string]any{"text": "budget"}, "_meta": meta})
			if err != nil {
				return err
			}
			if err := rs.write([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":`), params, []byte("}\n")); err != nil {
				return err
			}
			reply, err := rs.replyTo([]byte("1"), time.Now().Add(10*time.Second))
			if err != nil {
				return fmt.Errorf("the call with budget %d: %w", claimedBudget, err)
			}
			answer := "answered"
			if reply.isError() {
				answer = "refused: " + reply.errorMessage()
			}
			rep.note("_meta[%q] = %q: %s", tasks.MetaKey, m.String(), answer)
			served, err := taskOf(ctx, e, m.ID)
			if err != nil {
				return err
			}
			var measured string
			ok := false
			switch {
			case served == nil && reply.isError() && strings.Contains(reply.errorMessage(), "budget"):
				measured, ok = "refused, saying why: "+reply.errorMessage(), true
			case served == nil:
				measured = "no task recorded; the call was " + answer
			default:
				measured = fmt.Sprintf("the daemon served it as task %s with budget %d (%s)", short(served.ID), served.Budget, served.State)
				ok = served.Budget <= tasks.DefaultBudget
			}
			rep.check(fmt.Sprintf("a claimed budget of %d", claimedBudget), ok, measured,
				fmt.Sprintf("clamped to the node's own default (≤ %d), or refused saying so", tasks.DefaultBudget))
			st.Ready()
			<-ctx.Done()
			return nil
		},
	}
}

// taskOf finds a task in `mcpmesh tasks --json` of the daemon (nil if it
// is not there).
func taskOf(ctx context.Context, e *env, id string) (*tasks.Task, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.cfg.bin, "--home", e.home, "tasks", "--json").Output()
	if err != nil {
		return nil, fmt.Errorf("mcpmesh tasks --json: %w", err)
	}
	var list []tasks.Task
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("mcpmesh tasks --json: %w", err)
	}
	for i := range list {
		if list[i].ID == id {
			return &list[i], nil
		}
	}
	return nil, nil
}

func short(id string) string { return id[:min(len(id), 8)] + "…" }

// --- 4: pipelining ---

// pipelining writes cfg.pipelined tools/call requests on one session
// from each of identities fresh identities at once, without waiting for
// answers, reading what comes back, until every one is answered or the
// daemon ends the stream; then checks that each identity was banned.
func pipelining(identities int) *attack {
	name := "4-pipelining"
	if identities > 1 {
		name += "-many-identities"
	}
	return &attack{
		name:    name,
		title:   fmt.Sprintf("requests pipelined on one stream, not waiting for answers, from each of %d identities", identities),
		oneShot: true,
		run: func(ctx context.Context, e *env, rep *report, st *stage) error {
			defer st.Ready()
			total := e.cfg.pipelined
			type result struct {
				written, answered, refused int
				firstRefusal               string
				end                        error
				banned                     bool
				why                        string
			}
			results := make([]result, identities)
			var wg sync.WaitGroup
			errs := make([]error, identities)
			start := time.Now()
			for i := range identities {
				wg.Go(func() {
					r := &results[i]
					h, rs, err := throwaway(ctx, e.target, "node")
					if err != nil {
						errs[i] = err
						return
					}
					defer h.Close()
					var reading sync.WaitGroup
					reading.Go(func() {
						for r.answered < total {
							m, err := rs.next(time.Now().Add(30 * time.Second))
							if err != nil {
								r.end = err
								return
							}
							if !m.isResponse() {
								continue
							}
							r.answered++
							if m.isError() {
								r.refused++
								if r.firstRefusal == "" {
									r.firstRefusal = m.errorMessage()
								}
							}
						}
					})
					var batch bytes.Buffer
					for r.written < total && ctx.Err() == nil {
						batch.Reset()
						n := min(100, total-r.written)
						for j := 1; j <= n; j++ {
							fmt.Fprintf(&batch, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"pipelined"}}}`+"\n", r.written+j)
						}
						if err := rs.write(batch.Bytes()); err != nil {
							break
						}
						r.written += n
						st.Ready()
					}
					reading.Wait()
					r.why = "every request was answered; the identity was not cut off"
					if r.end == nil {
						return
					}
					// Cut off: can the identity open a session again, once the
					// daemon has closed its connection (if it does)?
					for wait := time.Now().Add(10 * time.Second); time.Now().Before(wait) && h.Network().Connectedness(e.target.ID) == network.Connected; {
						if !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
							break
						}
					}
					again, err := openRaw(ctx, h, e.target, "node", true)
					switch {
					case ctx.Err() != nil:
						r.why = "the suite stopped the attack before it could tell"
					case err == nil:
						again.reset()
						r.why = "the stream ended, but the identity opened a new session at once"
					default:
						r.banned = true
						r.why = "its connection was closed and a new session refused: " + err.Error()
					}
				})
			}
			wg.Wait()
			took := time.Since(start)
			st.Over()
			if err := errors.Join(errs...); err != nil {
				return err
			}
			var written, answered, refused, banned int
			var firstRefusal, firstEnd, notBanned string
			for _, r := range results {
				written += r.written
				answered += r.answered
				refused += r.refused
				if r.banned {
					banned++
				} else if notBanned == "" {
					notBanned = r.why
				}
				if firstRefusal == "" {
					firstRefusal = r.firstRefusal
				}
				if firstEnd == "" && r.end != nil {
					firstEnd = r.end.Error()
				}
			}
			rep.note("%d identities: %d written, %d answered (%d with an error) in %v", identities, written, answered, refused, took.Round(10*time.Millisecond))
			if firstRefusal != "" {
				rep.note("first error answer: %.200s", firstRefusal)
			}
			if firstEnd != "" {
				rep.note("first stream end: %.200s", firstEnd)
			}
			why := results[0].why
			if identities > 1 {
				why = fmt.Sprintf("%d of %d identities banned", banned, identities)
				if notBanned != "" {
					why += "; one not: " + notBanned
				}
			}
			rep.check("each pipelining identity is banned", banned == identities, why, "the ban still comes")
			return nil
		},
	}
}

// --- 5: JSON-RPC IDs ---

// jsonrpcIDs sends tools/call requests with unusual IDs, each on a session
// of its own (a frame the daemon refuses ends the session), and compares
// the ID that comes back, byte for byte; then a pending ID used again, and
// requests followed by a half-close.
func jsonrpcIDs(cfg *config) *attack {
	return &attack{
		name:  "5-jsonrpc-ids",
		title: "requests with unusual IDs, a pending ID reused, requests followed by a half-close",
		daemon: daemonSpec{
			args: []string{"--share", "slow=" + shellQuote(cfg.self)},
			env:  []string{roleEnv + "=" + roleSleep},
		},
		run: func(ctx context.Context, e *env, rep *report, st *stage) error {
			defer st.Ready()
			h, err := newIdentity(true)
			if err != nil {
				return err
			}
			defer h.Close()
			for _, id := range []string{`1.5`, `123456789012345678901234567890`, `9007199254740993`, `"string"`, `null`} {
				got, err := idRoundTrip(ctx, h, e, id)
				c := idCase{sent: id, got: got, due: "a result with the id as sent"}
				if id == "null" {
					// A response to it could not be told from one to an
					// invalid request: an error answer is due.
					c.due = "an error answer (id null)"
				}
				switch {
				case err != nil:
					c.got = "no answer: " + err.Error()
				case id == "null":
					c.ok = strings.HasPrefix(got, "null (error")
				default:
					c.ok = got == id
				}
				rep.mu.Lock()
				rep.ids = append(rep.ids, c)
				rep.mu.Unlock()
			}
			rep.mu.Lock()
			rep.ids = append(rep.ids, reusedID(ctx, h, e), halfClosed(ctx, h, e))
			rep.mu.Unlock()
			st.Ready()
			<-ctx.Done()
			return nil
		},
	}
}

// idRoundTrip sends one echo call with the given raw id on a new session
// and returns the id of the first response, with " (error: …)" if it is
// an error.
func idRoundTrip(ctx context.Context, h host.Host, e *env, id string) (string, error) {
	rs, err := openRaw(ctx, h, e.target, "node", true)
	if err != nil {
		return "", err
	}
	defer rs.reset()
	if err := rs.write([]byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"echo","arguments":{"text":"id"}}}` + "\n")); err != nil {
		return "", err
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		m, err := rs.next(deadline)
		if err != nil {
			return "", err
		}
		if !m.isResponse() {
			continue
		}
		got, _ := m.id()
		s := string(got)
		if m.isError() {
			s += " (error: " + m.errorMessage() + ")"
		}
		return s, nil
	}
}

// reusedID sends a request to the slow tool (id 7, 1.5 s) and, while it is
// pending, another with the same id. Due: an error answer for the second
// and the first's result.
func reusedID(ctx context.Context, h host.Host, e *env) idCase {
	c := idCase{sent: "7 (pending, 1.5 s), then 7 again", due: "an error answer to the second, the first's result"}
	rs, err := openRaw(ctx, h, e.target, "slow", true)
	if err != nil {
		c.got = "no session: " + err.Error()
		return c
	}
	defer rs.reset()
	call := func(ms int) []byte {
		return []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":` + strconv.Itoa(ms) + `}}}` + "\n")
	}
	start := time.Now()
	if err := rs.write(call(1500), call(0)); err != nil {
		c.got = err.Error()
		return c
	}
	var got []string
	results, errs := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 2 {
		m, err := rs.next(deadline)
		if err != nil {
			if len(got) == 0 {
				got = append(got, "no answer ("+err.Error()+")")
			}
			break
		}
		if !m.isResponse() {
			continue
		}
		id, _ := m.id()
		what := "result"
		if m.isError() {
			what = "error: " + m.errorMessage()
			errs++
		} else {
			results++
		}
		got = append(got, fmt.Sprintf("%s %s after %v", id, what, time.Since(start).Round(10*time.Millisecond)))
	}
	c.got = strings.Join(got, "; ")
	c.ok = results == 1 && errs == 1
	return c
}

// halfClosed sends cfg.halfClose requests, each on a new session followed
// by closing the sending side, and counts the answers.
func halfClosed(ctx context.Context, h host.Host, e *env) idCase {
	n := e.cfg.halfClose
	c := idCase{sent: fmt.Sprintf("42 then a half-close, ×%d", n), due: "every one answered"}
	answered := 0
	var firstErr error
	for range n {
		err := func() error {
			rs, err := openRaw(ctx, h, e.target, "node", true)
			if err != nil {
				return err
			}
			defer rs.reset()
			if err := rs.write([]byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"text":"half"}}}` + "\n")); err != nil {
				return err
			}
			if err := rs.s.CloseWrite(); err != nil {
				return err
			}
			_, err = rs.replyTo([]byte("42"), time.Now().Add(3*time.Second))
			return err
		}()
		if err == nil {
			answered++
		} else if firstErr == nil {
			firstErr = err
		}
	}
	c.got = fmt.Sprintf("%d of %d answered", answered, n)
	if firstErr != nil {
		c.got += " (first loss: " + firstErr.Error() + ")"
	}
	c.ok = answered == n
	return c
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// --- 6: two daemons on one port ---

// portCollision starts a second daemon on the first one's explicit port,
// then has fresh identities dial the first through that port.
func portCollision() *attack {
	return &attack{
		name:         "6-port-collision",
		title:        "a second daemon started with the first one's explicit --listen port",
		explicitPort: true,
		run: func(ctx context.Context, e *env, rep *report, st *stage) error {
			defer st.Ready()
			home, err := os.MkdirTemp("", "mcpmesh-attack-second-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(home)
			listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", e.port)
			sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			second, err := startDaemon(sctx, e.cfg.bin, home, daemonSpec{args: []string{"--listen", listen}})
			cancel()
			port := strconv.Itoa(e.port)
			if err != nil {
				msg := lastLines(err.Error(), 3)
				rep.check("a second daemon on "+listen, strings.Contains(err.Error(), port), "it refused to start: "+msg, "an error that names the port")
			} else {
				defer second.stop()
				rep.check("a second daemon on "+listen, false, fmt.Sprintf("it started (%s, listening on %s)", second.info.ID, second.info.Addrs), "an error that names the port")
			}
			reached, mismatch := 0, 0
			var other error
			for range e.cfg.portDials {
				h, err := newIdentity(false)
				if err != nil {
					return err
				}
				err = connect(ctx, h, e.target, 5*time.Second)
				h.Close()
				switch {
				case err == nil:
					reached++
				case strings.Contains(err.Error(), "peer id mismatch"):
					mismatch++
				default:
					other = cmpErr(other, err)
				}
			}
			rep.check(fmt.Sprintf("fresh identities dialing %s/p2p/%s", listen, short(e.target.ID.String())), reached == e.cfg.portDials,
				fmt.Sprintf("%d of %d reached it, %d failed with \"peer id mismatch\"%s", reached, e.cfg.portDials, mismatch, errSuffix(other)), "all reach it")
			st.Ready()
			<-ctx.Done()
			return nil
		},
	}
}

// freePort finds a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
