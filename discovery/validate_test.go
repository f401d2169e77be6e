package discovery

import "github.com/matrix2mqtt/matrix2mqtt/internal/havalidate"

// validateDiscovery is the validator written from Home Assistant's documentation; it lives in
// internal/havalidate so that the integration tests can check what the running bridge publishes.
func validateDiscovery(prefix, topic string, payload []byte) error {
	return havalidate.Validate(prefix, topic, payload)
}
