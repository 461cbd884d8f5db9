-- R², mean absolute error, mean squared error … of the regression on its held-out (newest) split.
SELECT *
FROM ML.EVALUATE(MODEL `${project}.${dataset}.price_regression`);
