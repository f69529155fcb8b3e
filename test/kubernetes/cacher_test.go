package kubernetes

func cacherSuite() []suiteTest { return nil }
