# Reference values for canaryd's Mann-Whitney shift interval, from R's own wilcox.test
# with the options Kayenta's judge evaluates: conf.int = TRUE, exact = FALSE (normal
# approximation with tie and continuity correction).
#
# Run: Rscript tests/data/vectors/mann_whitney.R > tests/data/vectors/mann_whitney.json
set.seed(20261123)
cases <- list(
  list(name = "kayenta suite", x = c(10, 20, 30, 40), y = c(1, 2, 3, 4)),
  list(name = "small with a tie", x = c(3.1, 2.2, 5.5, 4.0, 6.1, 7.3, 1.9), y = c(1.0, 2.2, 0.5, 3.3, 2.8)),
  list(name = "latency, shifted up", x = round(rnorm(30, 0.23, 0.03), 3), y = round(rnorm(30, 0.20, 0.03), 3)),
  list(name = "many ties", x = round(rnorm(40, 10.3, 1), 0), y = round(rnorm(35, 10, 1), 0)),
  list(name = "unequal sizes, no shift", x = rnorm(12, 5, 2), y = rnorm(50, 5, 2))
)
num <- function(v) sprintf("%.17g", v)
out <- c()
for (case in cases) {
  for (level in c(0.95, 0.98)) {
    r <- suppressWarnings(wilcox.test(case$x, case$y, conf.int = TRUE, exact = FALSE, conf.level = level))
    out <- c(out, sprintf(
      '  {"name": "%s", "confidence": %s, "x": [%s], "y": [%s], "interval": [%s, %s], "estimate": %s, "pValue": %s}',
      case$name, level, paste(num(case$x), collapse = ", "), paste(num(case$y), collapse = ", "),
      num(r$conf.int[1]), num(r$conf.int[2]), num(r$estimate), num(r$p.value)))
  }
}
cat("{\"generatedBy\": \"tests/data/vectors/mann_whitney.R\", \"rVersion\": \"", R.version.string, "\",\n \"cases\": [\n", sep = "")
cat(paste(out, collapse = ",\n"))
cat("\n]}\n")
