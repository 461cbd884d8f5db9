-- The chosen (p, d, q), AIC, variance and seasonality of each instrument's model; a series that
-- failed to fit has its reason in error_message.
SELECT *
FROM ML.ARIMA_EVALUATE(MODEL `${project}.${dataset}.price_arima_per_instrument`)
ORDER BY instrument_token;
