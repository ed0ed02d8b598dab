package node

// trustConfig is who may see and call what the node shares.
type trustConfig struct {
	open bool
}

// WithOpen lets every peer that can connect see and call everything the node
// shares, as if its policy granted everything to everyone. For demos and
// labs; a node started this way says so in its log.
func WithOpen() Option {
	return func(c *config) error {
		c.trust.open = true
		return nil
	}
}
