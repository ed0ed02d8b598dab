package loopback

import (
	"net/http/httptest"
	"testing"
)

func TestCheckRequest(t *testing.T) {
	for _, c := range []struct {
		host, origin string
		ok           bool
	}{
		{"127.0.0.1:3000", "", true},
		{"localhost:3000", "http://localhost:3000", true},
		{"[::1]:3000", "http://127.0.0.1:3000", true},
		{"LOCALHOST.", "", true},
		{"[::ffff:127.0.0.1]:80", "", true},
		{"evil.example.com:3000", "", false},
		{"127.0.0.1.nip.io:3000", "", false},
		{"10.0.0.1:3000", "", false},
		{"127.0.0.1:3000", "http://evil.example.com", false},
		{"127.0.0.1:3000", "null", false},
		{"127.0.0.1:3000", "file://localhost", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if err := CheckRequest(r); (err == nil) != c.ok {
			t.Errorf("Host %q Origin %q: error %v, want ok=%v", c.host, c.origin, err, c.ok)
		}
	}
}

func TestCheckListenAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:0": true, "[::1]:8080": true, "localhost:1": true,
		"0.0.0.0:8080": false, ":8080": false, "192.168.1.2:80": false, "127.0.0.1": false,
	} {
		if err := CheckListenAddr(addr); (err == nil) != ok {
			t.Errorf("%q: error %v, want ok=%v", addr, err, ok)
		}
	}
}
