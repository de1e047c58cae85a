//! The builder methods both vendor clients share.

/// The builder methods both vendor clients share: the same fields with the
/// same meaning, documented once.
macro_rules! shared_client_settings {
    (rules: $rules:literal, jobs: $jobs:literal) => {
        /// Body size limits (default 16 MiB for results, 64 KiB for errors).
        pub fn limits(mut self, limits: $crate::vendor::BodyLimits) -> Self {
            self.core.limits = limits;
            self
        }

        #[doc = concat!(
                            "Which errors the client retries (default [`RetryRules::", $rules,
                            "`](crate::vendor::RetryRules::", $rules, "))."
                        )]
        pub fn retry_rules(mut self, rules: $crate::vendor::RetryRules) -> Self {
            self.core.set_rules(rules);
            self
        }

        /// The client's retry layer (default: 3 attempts, backoff from 1 s).
        /// Its classifier is replaced by the client's retry rules.
        pub fn retry(mut self, retry: $crate::retry::RetryLayer) -> Self {
            self.core.retry = retry;
            self
        }

        /// Look for business errors in 200 outputs (e.g. `{"success":
        /// false}`); they are classified by the same retry rules.
        pub fn business_rule(mut self, rule: $crate::vendor::BusinessRule) -> Self {
            self.core.business = Some(rule);
            self
        }

        /// Where calls and jobs that fail for good go, once per logical
        /// call after the client's retries, with a request that re-runs
        /// them. The client's requests carry
        /// [`DeadLettersHandled`](crate::dead_letter::DeadLettersHandled), so an
        /// audit layer below that shares the sink does not letter each
        /// attempt again.
        pub fn dead_letters(mut self, sink: impl $crate::dead_letter::DeadLetterSink) -> Self {
            self.core.dead_letters = Some(::std::sync::Arc::new(sink));
            self
        }

        #[doc = concat!("The runner that waits for ", $jobs, ".")]
        pub fn job_runner(mut self, runner: $crate::jobs::JobRunner) -> Self {
            self.core.runner = runner;
            self
        }
    };
}
pub(crate) use shared_client_settings;
